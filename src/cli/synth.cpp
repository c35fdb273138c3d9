// `retclip synth`: writes the synthetic fundus data set (manifest or RET-CLIP layout).
// Option wiring only; the generator is data/synth.hpp.
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/data/synth.hpp"
#include "retclip/util/log.hpp"

namespace {

struct SynthArgs {
  std::string out;
  retclip::data::SynthOptions opts;
};

retclip::cli::RunFn add_synth(CLI::App& app) {
  auto args = std::make_shared<SynthArgs>();
  auto& o = args->opts;
  auto* sub = app.add_subcommand(
      "synth", "Write synthetic colour fundus photograph pairs with per-eye findings and reports");
  sub->add_option("--out", args->out, "output folder")->required();
  sub->add_option("--patients", o.patients, "number of patients (two eyes each)")
      ->capture_default_str();
  sub->add_option("--seed", o.seed, "random seed (same seed -> same bytes)")->capture_default_str();
  sub->add_option("--size", o.size, "image size in pixels (square)")->capture_default_str();
  sub->add_option("--language", o.language, "report language")
      ->check(CLI::IsMember({"en", "zh"}))
      ->capture_default_str();
  sub->add_option("--val", o.val,
                  "validation patients (the last N); -1 = min(200, ceil(10% of patients))")
      ->capture_default_str();
  sub->add_option("--format", o.format,
                  "manifest: images/ + train.csv, val.csv, all.jsonl; retclip: "
                  "<split>_texts.jsonl + <split>_imgs.tsv (base64)")
      ->check(CLI::IsMember({"manifest", "retclip"}))
      ->capture_default_str();
  sub->add_option("--image-format", o.image_format, "png (lossless) or jpg (quality 95)")
      ->check(CLI::IsMember({"png", "jpg"}))
      ->capture_default_str();
  sub->add_option("--missing-eye-rate", o.missing_eye_rate,
                  "fraction of patients with one eye not imaged")
      ->capture_default_str();
  sub->add_flag("--preview", o.preview, "also write preview.png (4x4 pairs with labels)");
  sub->add_option("--threads", o.threads, "worker threads (0 = cores available)")
      ->capture_default_str();
  return [args] {
    using namespace retclip;
    const auto& o = args->opts;
    log::info("synth: {} patients, {} px, seed {}, language {}, format {} -> {}", o.patients,
              o.size, o.seed, o.language, o.format, args->out);
    data::SynthSummary s = data::synth_dataset(o, args->out);
    log::info("synth: wrote {} train + {} val patients ({} missing eyes) in {:.1f} s "
              "({:.0f} patients/s){}",
              s.train, s.val, s.missing_eyes, s.seconds,
              s.seconds > 0 ? static_cast<double>(s.train + s.val) / s.seconds : 0.0,
              o.preview ? fmt::format("; preview: {}/preview.png", args->out) : "");
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(synth, add_synth);
