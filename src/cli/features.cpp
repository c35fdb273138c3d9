// `retclip features`: frozen-encoder features of a labelled set, cached as safetensors
// plus ids (docs/EVALUATION.md).
#include <fmt/format.h>

#include <filesystem>

#include "command.hpp"
#include "retclip/config/enums.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/util/error.hpp"

namespace {

struct FeaturesArgs {
  std::string weights, checkpoint, data, classes, out, on_bad = "fail", level = "eye";
  std::string feature = "post_proj";
  retclip::eval::FeatureOptions fo;
};

retclip::cli::RunFn add_features(CLI::App& app) {
  auto a = std::make_shared<FeaturesArgs>();
  auto* sub = app.add_subcommand("features", "Extract frozen-encoder features of a labelled set");
  sub->add_option("--weights", a->weights,
                  "export directory (retclip.json), or an image tower's weights file (timm, "
                  "RETFound, DINOv2 .pth / .safetensors)");
  sub->add_option("--checkpoint", a->checkpoint, "step-N, checkpoints or run directory");
  sub->add_option("--data", a->data, "labelled manifest (.csv/.jsonl) or class folder root")
      ->required();
  sub->add_option("--classes", a->classes, "class order, comma-separated (flag-string labels)");
  sub->add_option("--out", a->out, "output .safetensors file")->required();
  sub->add_option("--level", a->level, "eye | patient");
  auto* feature = sub->add_option("--feature", a->feature,
                                  "pre_proj | post_proj (default post_proj; pre_proj for an image "
                                  "tower's weights file, whose projection is new)");
  sub->add_flag("--mapping", a->fo.mapping, "eye level: apply the left/right feature mappings");
  sub->add_option("--batch", a->fo.batch_size, "images (eye) or patients per forward pass");
  sub->add_option("--workers", a->fo.workers, "loader worker threads");
  sub->add_option("--device", a->fo.device, "auto | cpu | cuda");
  sub->add_option("--on-bad-sample", a->on_bad, "fail | skip (as data.on_bad_sample)");
  return [a, feature] {
    using namespace retclip;
    if (feature->count() == 0 && std::filesystem::is_regular_file(a->weights))
      a->feature = "pre_proj";
    RETCLIP_CHECK_USAGE(a->weights.empty() != a->checkpoint.empty(),
                        "give exactly one of --weights and --checkpoint. HINT: --weights "
                        "EXPORT_DIR or --checkpoint RUN_DIR");
    eval::Encoder enc = eval::load_encoder(
        a->weights.empty() ? a->checkpoint : a->weights);
    data::LabelOptions lo;
    lo.path = a->data;
    lo.level = config::parse<config::Level>(a->level, "--level");
    lo.classes = data::parse_class_list(a->classes);
    lo.policy = config::parse<data::BadSamplePolicy>(a->on_bad, "--on-bad-sample");
    lo.draw_splits = false;  // splits are the probe's business; every item gets a feature
    data::LabelledSet set = data::read_labelled(lo);
    a->fo.level = set.level;
    a->fo.feature = config::parse<config::Feature>(a->feature, "--feature");
    a->fo.policy = lo.policy;
    eval::Features f = eval::extract_features(enc, set.items, a->fo);
    eval::save_features(a->out, f, enc.source);
    fmt::print("features: {} {} {} features [{} x {}] in {:.1f} s ({:.1f} items/s) -> {}\n",
               f.ids.size(), f.level, f.feature, f.x.size(0), f.x.size(1), f.seconds,
               static_cast<double>(f.ids.size()) / f.seconds, a->out);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(features, add_features);
