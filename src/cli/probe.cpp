// `retclip probe`: linear probe (and K-shot probes) on frozen features of a labelled set;
// writes results.json and results_predictions.csv (docs/EVALUATION.md).
#include <fmt/format.h>

#include <filesystem>

#include "command.hpp"
#include "retclip/config/enums.hpp"
#include "retclip/eval/probe.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace {

struct ProbeArgs {
  std::string features, weights, checkpoint, data, classes, out, on_bad = "fail", level = "auto";
  std::string c_grid, feature = "post_proj";
  bool mapping = false, random_baseline = false, ignore_split = false;
  double val_fraction = 0.2, test_fraction = 0.0;
  uint64_t split_seed = 0;
  int64_t workers = 2, batch = 64;
  std::string device = "auto";
  retclip::eval::ProbeOptions po;
};

retclip::cli::RunFn add_probe(CLI::App& app) {
  auto a = std::make_shared<ProbeArgs>();
  a->po.bootstrap.rounds = 1000;
  auto* sub = app.add_subcommand("probe", "Linear probe on frozen features of a labelled set");
  sub->add_option("--data", a->data, "labelled manifest (.csv/.jsonl) or class folder root")
      ->required();
  sub->add_option("--features", a->features, "features file from retclip features");
  sub->add_option(
      "--weights", a->weights,
      "export directory or image tower weights file (timm, RETFound .pth): extract features first");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint or run directory: extract first");
  sub->add_option("--classes", a->classes, "class order, comma-separated (flag-string labels)");
  sub->add_option("--level", a->level,
                  "auto | eye | patient (with --features: the file's level; auto = the "
                  "set's label columns)");
  auto* feature = sub->add_option(
      "--feature", a->feature,
      "pre_proj | post_proj (when extracting; pre_proj for an image tower's weights file)");
  sub->add_flag("--mapping", a->mapping, "eye level: left/right feature mappings (extracting)");
  sub->add_flag("--random-baseline", a->random_baseline,
                "also probe a random-initialised encoder of the same shape");
  sub->add_option("--out", a->out,
                  "directory for results.json and results_predictions.csv (and "
                  "random_baseline.json, random_baseline_predictions.csv)")
      ->required();
  sub->add_option("--c-grid", a->c_grid,
                  "inverse L2 strengths, comma-separated (default 1e-4..1e4)");
  sub->add_flag("--balanced", a->po.balanced, "balanced class weights");
  sub->add_option("--shots", a->po.shots, "K training rows per class (0 = all)");
  sub->add_option("--seeds", a->po.seeds, "K-shot draws (mean +- std over them)");
  sub->add_option("--seed", a->po.seed, "first K-shot seed");
  sub->add_option("--select", a->po.select, "validation metric choosing C");
  sub->add_option("--bootstrap", a->po.bootstrap.rounds,
                  "bootstrap rounds for test CIs (0 = none)");
  sub->add_option("--val-fraction", a->val_fraction, "val drawn from train when there is none");
  sub->add_option("--test-fraction", a->test_fraction, "test drawn when the set has no splits");
  sub->add_option("--split-seed", a->split_seed, "seed of drawn splits");
  sub->add_flag("--ignore-split", a->ignore_split,
                "ignore the split column and draw all splits (--test-fraction, --val-fraction)");
  sub->add_option("--batch", a->batch, "forward batch when extracting");
  sub->add_option("--workers", a->workers, "loader worker threads when extracting");
  sub->add_option("--device", a->device, "auto | cpu | cuda");
  sub->add_option("--on-bad-sample", a->on_bad, "fail | skip (as data.on_bad_sample)");
  return [a, feature] {
    using namespace retclip;
    const int given = !a->features.empty() + !a->weights.empty() + !a->checkpoint.empty();
    RETCLIP_CHECK_USAGE(given == 1,
                        "give exactly one of --features, --weights and --checkpoint. "
                        "HINT: --features FILE from retclip features");
    RETCLIP_CHECK_USAGE(!(a->random_baseline && !a->features.empty()),
                        "--random-baseline needs an encoder. HINT: --weights or --checkpoint");
    if (!a->c_grid.empty()) {
      a->po.c_grid.clear();
      for (const auto& c : data::parse_class_list(a->c_grid)) a->po.c_grid.push_back(std::stod(c));
    }
    // A features file was extracted at one level; the labelled set is read at that level
    // so that its item ids (patient or patient:eye) are the file's.
    eval::Features cached;
    config::Level level = config::parse<config::Level>(a->level, "--level");
    if (!a->features.empty()) {
      cached = eval::load_features(a->features);
      if (!cached.level.empty()) {
        RETCLIP_CHECK_USAGE(level == config::Level::kAuto || a->level == cached.level, "--level ",
                            a->level, " differs from the level of ", a->features, " (",
                            cached.level, "; retclip features --level ", cached.level,
                            "). HINT: drop --level (the file's level is used), or extract ",
                            "features at --level ", a->level);
        level = config::parse<config::Level>(cached.level, a->features + " level");
      }
    }
    data::LabelOptions lo;
    lo.path = a->data;
    lo.level = level;
    lo.classes = data::parse_class_list(a->classes);
    lo.policy = config::parse<data::BadSamplePolicy>(a->on_bad, "--on-bad-sample");
    lo.val_fraction = a->val_fraction;
    lo.test_fraction = a->test_fraction;
    lo.seed = a->split_seed;
    lo.ignore_split = a->ignore_split;
    data::LabelledSet set = data::read_labelled(lo);
    data::require_splits(set, lo, {"train", "val", "test"}, "the probe");
    eval::FeatureOptions fo;
    fo.level = set.level;
    fo.feature = feature->count() == 0 && std::filesystem::is_regular_file(a->weights)
                     ? config::Feature::kPreProj
                     : config::parse<config::Feature>(a->feature, "--feature");
    fo.mapping = a->mapping;
    fo.batch_size = a->batch;
    fo.workers = a->workers;
    fo.device = a->device;
    fo.policy = lo.policy;
    // --out is created once there is something to write: a failed probe leaves none.
    auto report = [&](const eval::LabelledProbe& p, const std::string& name,
                      const std::string& what) {
      std::filesystem::create_directories(a->out);
      util::write_file_atomic(std::filesystem::path(a->out) / (name + ".json"), p.json);
      util::write_file_atomic(std::filesystem::path(a->out) / (name + "_predictions.csv"),
                              p.predictions_csv);
      fmt::print("{}: {}", what, p.summary);
    };
    if (!a->features.empty()) {
      report(eval::probe_features(set, cached, a->po), "results", a->features);
      return 0;
    }
    eval::Encoder enc = eval::load_encoder(
        a->weights.empty() ? a->checkpoint : a->weights);
    auto trained = eval::run_probe(enc, set, fo, a->po);
    report(trained, "results", enc.source);
    if (a->random_baseline) {
      eval::Encoder rnd = eval::random_encoder(enc, 0);
      auto base = eval::run_probe(rnd, set, fo, a->po);
      report(base, "random_baseline", rnd.source);
      fmt::print("macro AUROC: pretrained {:.4f}, random-init {:.4f}\n",
                 trained.result.test_mean.at("auroc_macro"),
                 base.result.test_mean.at("auroc_macro"));
    }
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(probe, add_probe);
