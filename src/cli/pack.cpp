// `retclip pack`: pre-decode a manifest into shards (data::pack_dataset), or check a
// shard set's checksums with --verify DIR (exit 2 naming the shard and record).
#include <fmt/format.h>

#include <algorithm>

#include "command.hpp"
#include "retclip/config/enums.hpp"
#include "retclip/data/shards.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"

namespace {

struct PackArgs {
  retclip::data::PackOptions opts;
  std::string on_bad = "skip";
  std::string preprocess = "fundus_crop";
  std::string verify;
};

retclip::cli::RunFn add_pack(CLI::App& app) {
  auto a = std::make_shared<PackArgs>();
  auto* sub = app.add_subcommand(
      "pack", "Pre-decode a manifest into packed shards (or --verify a shard set)");
  sub->add_option("--manifest", a->opts.manifest, "manifest (CSV/JSONL) or RET-CLIP data");
  sub->add_option("--out", a->opts.out, "output directory (shard-NNNNN.rcs + index.json)");
  sub->add_option("--size", a->opts.image_size, "image size in pixels")->capture_default_str();
  sub->add_option("--preprocess", a->preprocess,
                  "fundus_crop (field of view, padded square) or resize (whole photo "
                  "squashed, as the RET-CLIP reference); train with the same data.preprocess")
      ->check(CLI::IsMember(retclip::config::names<retclip::data::Preprocess>()))
      ->capture_default_str();
  sub->add_option("--format", a->opts.format, "input layout")
      ->check(CLI::IsMember({"auto", "manifest", "retclip"}))
      ->capture_default_str();
  sub->add_option("--split", a->opts.split, "only this split (empty = all rows)");
  sub->add_option("--tokenizer", a->opts.tokenizer_path,
                  "vocab.txt / .model: store token ids in the shards (a copy of the file "
                  "is kept beside index.json)");
  sub->add_option("--tokenizer-type", a->opts.tokenizer_type,
                  "tokenizer kind; auto infers it from the file (a sentencepiece model is "
                  "binary, a WordPiece vocab is text)")
      ->check(CLI::IsMember({"auto", "wordpiece", "sentencepiece"}))
      ->capture_default_str();
  sub->add_option("--context", a->opts.context_length, "token ids per report")
      ->capture_default_str();
  sub->add_option("--threads", a->opts.threads, "decode threads (0 = cores available)")
      ->capture_default_str();
  sub->add_option("--shard-size", a->opts.shard_size, "input rows per shard")
      ->capture_default_str();
  sub->add_option("--on-bad-sample", a->on_bad, "skip or fail")
      ->check(CLI::IsMember(retclip::config::names<retclip::data::BadSamplePolicy>()))
      ->capture_default_str();
  sub->add_option("--max-image-pixels", a->opts.max_image_pixels,
                  "refuse images with more pixels (read from the header; 0 = no limit)")
      ->capture_default_str();
  sub->add_option("--verify", a->verify, "check every checksum of the shard set in DIR");
  return [a] {
    using namespace retclip;
    if (!a->verify.empty()) {
      auto rep = data::verify_shard_set(a->verify);
      fmt::print("{}: OK, {} shards, {} records, {:.1f} MiB verified\n", a->verify, rep.shards,
                 rep.records, static_cast<double>(rep.bytes) / (1 << 20));
      return 0;
    }
    RETCLIP_CHECK_USAGE(!a->opts.manifest.empty() && !a->opts.out.empty(),
                        "retclip pack needs --manifest and --out (or --verify DIR). HINT: "
                        "retclip pack --manifest data/manifest.csv --out shards --size 224");
    a->opts.on_bad_sample = config::parse<data::BadSamplePolicy>(a->on_bad, "--on-bad-sample");
    a->opts.preprocess = config::parse<data::Preprocess>(a->preprocess, "--preprocess");
    auto rep = data::pack_dataset(a->opts);
    log::info("packed {} patients into {} shards in {} ({} kept from an earlier run) -> {}",
              rep.records, rep.shards, util::format_duration(rep.seconds), rep.shards_reused,
              a->opts.out);
    if (rep.bad_samples > 0) {
      const size_t shown = std::min<size_t>(rep.bad.size(), 5);
      log::warn("{} bad samples skipped, all listed in {}; first {}:", rep.bad_samples,
                rep.bad_list, shown);
      for (size_t i = 0; i < shown; ++i)
        log::warn("  {}: {}", rep.bad[i].origin, rep.bad[i].reason);
    }
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(pack, add_pack);
