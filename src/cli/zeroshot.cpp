// `retclip zeroshot`: zero-shot classification of a labelled set from class prompts
// (docs/EVALUATION.md).
#include <fmt/format.h>

#include <filesystem>

#include "command.hpp"
#include "retclip/config/enums.hpp"
#include "retclip/eval/zeroshot.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace {

struct ZeroShotArgs {
  std::string weights, checkpoint, data, prompts, out, level = "auto", on_bad = "fail";
  bool ignore_split = false;
  retclip::eval::ZeroShotOptions zo;
};

retclip::cli::RunFn add_zeroshot(CLI::App& app) {
  auto a = std::make_shared<ZeroShotArgs>();
  a->zo.bootstrap.rounds = 1000;
  auto* sub = app.add_subcommand("zeroshot", "Zero-shot classification from class prompts");
  sub->add_option("--weights", a->weights, "export directory with full.safetensors");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory");
  sub->add_option("--data", a->data, "labelled manifest (.csv/.jsonl) or class folder root")
      ->required();
  sub->add_option("--prompts", a->prompts, "prompt YAML (class order = label order)")->required();
  sub->add_option("--level", a->level, "auto | eye | patient");
  sub->add_option("--out", a->out, "write the results JSON here");
  sub->add_flag("--all", a->ignore_split, "score every row, not only the test split");
  sub->add_option("--bootstrap", a->zo.bootstrap.rounds, "bootstrap rounds for CIs (0 = none)");
  sub->add_option("--batch", a->zo.features.batch_size, "images per forward pass");
  sub->add_option("--workers", a->zo.features.workers, "loader worker threads");
  sub->add_option("--device", a->zo.features.device, "auto | cpu | cuda");
  sub->add_option("--on-bad-sample", a->on_bad, "fail | skip (as data.on_bad_sample)");
  return [a] {
    using namespace retclip;
    RETCLIP_CHECK_USAGE(a->weights.empty() != a->checkpoint.empty(),
                        "give exactly one of --weights and --checkpoint");
    eval::PromptSet prompts = eval::load_prompts(a->prompts);
    data::LabelOptions lo;
    lo.path = a->data;
    lo.level = config::parse<config::Level>(a->level, "--level");
    lo.classes = prompts.classes;
    lo.policy = config::parse<data::BadSamplePolicy>(a->on_bad, "--on-bad-sample");
    lo.draw_splits = false;
    lo.ignore_split = a->ignore_split;
    data::LabelledSet set = data::read_labelled(lo);
    a->zo.features.policy = lo.policy;
    eval::Encoder enc = eval::load_encoder(
        a->weights.empty() ? a->checkpoint : a->weights);
    auto r = eval::run_zeroshot(enc, set, prompts, a->zo);
    fmt::print("{}", r.summary);
    if (!a->out.empty()) util::write_file_atomic(a->out, r.json);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(zeroshot, add_zeroshot);
