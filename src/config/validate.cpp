// Range and enumeration checks of a Config, in declaration order so the first error
// is the one a user reading the file top to bottom meets first. Errors name the key
// path and, when the value came from a file or --set, where it came from.
#include <fmt/format.h>

#include <cmath>

#include "retclip/util/error.hpp"
#include "schema.hpp"

namespace retclip::config::detail {

namespace {

class Checker {
 public:
  explicit Checker(const Origins& origins) : origins_(origins) {}

  [[noreturn]] void fail(const std::string& path, const std::string& expected,
                         const std::string& found, const std::string& hint = "") const {
    auto it = origins_.find(path);
    std::string where = it == origins_.end() ? "" : " in " + it->second;
    throw UsageError(fmt::format("`{}`{}: expected {}, found {}{}", path, where, expected, found,
                                 hint.empty() ? "" : ". HINT: " + hint));
  }

  void finite(const std::string& path, double v) const {
    if (!std::isfinite(v)) fail(path, "a finite number", fmt::format("{}", v));
  }
  void gt(const std::string& path, double v, double lo, const std::string& hint = "") const {
    finite(path, v);
    if (!(v > lo)) fail(path, fmt::format("a number > {}", lo), fmt::format("{}", v), hint);
  }
  void ge(const std::string& path, double v, double lo, const std::string& hint = "") const {
    finite(path, v);
    if (!(v >= lo)) fail(path, fmt::format("a number >= {}", lo), fmt::format("{}", v), hint);
  }
  /// lo <= v < hi
  void half_open(const std::string& path, double v, double lo, double hi) const {
    finite(path, v);
    if (!(v >= lo && v < hi))
      fail(path, fmt::format("a number in [{}, {})", lo, hi), fmt::format("{}", v));
  }
  void closed(const std::string& path, double v, double lo, double hi) const {
    finite(path, v);
    if (!(v >= lo && v <= hi))
      fail(path, fmt::format("a number in [{}, {}]", lo, hi), fmt::format("{}", v));
  }
  void ge(const std::string& path, int64_t v, int64_t lo, const std::string& hint = "") const {
    if (v < lo) fail(path, fmt::format("an integer >= {}", lo), fmt::format("{}", v), hint);
  }
  void closed(const std::string& path, int64_t v, int64_t lo, int64_t hi) const {
    if (v < lo || v > hi)
      fail(path, fmt::format("an integer in [{}, {}]", lo, hi), fmt::format("{}", v));
  }
  void one_of(const std::string& path, const std::string& v,
              const std::vector<std::string>& allowed) const {
    for (const auto& a : allowed)
      if (v == a) return;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    std::string guess = nearest(v, allowed);
    fail(path, "one of " + list, fmt::format("`{}`", v),
         guess.empty() ? "" : fmt::format("did you mean `{}`?", guess));
  }

 private:
  const Origins& origins_;
};

// data.augment and finetune.augment: the same keys, the same rules; `crop_hint` says
// what the recipe each block follows uses.
void check_augment(const Checker& k, const std::string& prefix, const AugmentConfig& a,
                   const std::string& crop_hint) {
  k.finite(prefix + ".crop_scale", a.crop_scale[0]);
  k.finite(prefix + ".crop_scale", a.crop_scale[1]);
  if (!(a.crop_scale[0] > 0 && a.crop_scale[0] <= a.crop_scale[1] && a.crop_scale[1] <= 1))
    k.fail(prefix + ".crop_scale", "[a, b] with 0 < a <= b <= 1",
           fmt::format("[{}, {}]", a.crop_scale[0], a.crop_scale[1]), crop_hint);
  k.closed(prefix + ".color_jitter", a.color_jitter, 0.0, 1.0);
  k.closed(prefix + ".random_erasing", a.random_erasing, 0.0, 1.0);
  k.one_of(prefix + ".interpolation", a.interpolation, {"bilinear", "bicubic"});
  k.one_of(prefix + ".jitter_order", a.jitter_order, {"fixed", "random"});
}

}  // namespace

void validate_with(const Config& c, const Origins& origins) {
  Checker k(origins);

  // model
  const auto& v = c.model.vision;
  k.one_of("model.vision.preset", v.preset, vision_preset_names());
  if (v.preset == "checkpoint" && (c.model.init.vision.empty() || c.model.init.vision == "none"))
    k.fail("model.init.vision",
           "a ViT checkpoint (CLIP, timm, RETFound, DINOv2; model.vision.preset is `checkpoint`)",
           "nothing", "set model.init.vision, or pick a named preset such as ViT-B-16");
  if (v.image_size != 0) k.closed("model.vision.image_size", v.image_size, 16, 4096);
  k.ge("model.vision.patch_size", v.patch_size, 0, "0 takes the preset's");
  if (v.patch_size > 0 && v.image_size > 0 && v.image_size % v.patch_size != 0)
    k.fail("model.vision.image_size",
           fmt::format("a multiple of model.vision.patch_size ({})", v.patch_size),
           fmt::format("{}", v.image_size));
  k.ge("model.vision.width", v.width, 0, "0 takes the preset's");
  k.ge("model.vision.layers", v.layers, 0, "0 takes the preset's");
  k.ge("model.vision.heads", v.heads, 0, "0 takes width / 64");
  if (v.heads > 0 && v.width > 0 && v.width % v.heads != 0)
    k.fail("model.vision.heads", fmt::format("a divisor of model.vision.width ({})", v.width),
           fmt::format("{}", v.heads));
  k.ge("model.vision.mlp_ratio", v.mlp_ratio, 0.0, "0 takes the preset's (4)");
  if (v.pool == Pool::kToken && !v.class_token)
    k.fail("model.vision.pool", "avg (model.vision.class_token is false)", "token",
           "set model.vision.pool=avg, or model.vision.class_token=true");
  k.ge("model.vision.register_tokens", v.register_tokens, int64_t{0});
  k.ge("model.vision.layer_scale", v.layer_scale, 0.0, "0 = no layer scale");
  k.ge("model.vision.norm_eps", v.norm_eps, 0.0, "0 takes 1e-5 with norm_pre, else 1e-6");

  const auto& t = c.model.text;
  k.one_of("model.text.preset", t.preset, text_preset_names());
  if (t.preset == "hf" && c.model.init.text.empty())
    k.fail("model.init.text", "a Hugging Face BERT folder (model.text.preset is `hf`)", "nothing",
           "set model.init.text to a folder with config.json and model.safetensors");
  k.ge("model.text.vocab_size", t.vocab_size, 0, "0 takes the preset's");
  k.ge("model.text.hidden", t.hidden, 0, "0 takes the preset's");
  k.ge("model.text.layers", t.layers, 0, "0 takes the preset's");
  k.ge("model.text.heads", t.heads, 0, "0 takes the preset's");
  if (t.heads > 0 && t.hidden > 0 && t.hidden % t.heads != 0)
    k.fail("model.text.heads", fmt::format("a divisor of model.text.hidden ({})", t.hidden),
           fmt::format("{}", t.heads));
  k.ge("model.text.intermediate", t.intermediate, 0, "0 takes the preset's");
  k.ge("model.text.max_position", t.max_position, 0, "0 takes the preset's");
  k.half_open("model.text.dropout", t.dropout, 0.0, 1.0);
  k.ge("model.embed_dim", c.model.embed_dim, 0, "0 takes the vision preset's");
  k.finite("model.logit_scale_init", c.model.logit_scale_init);

  // data
  const auto& d = c.data;
  k.one_of("data.format", d.format, {"auto", "manifest", "retclip", "shards"});
  k.closed("data.image_size", d.image_size, 16, 4096);
  if (v.patch_size > 0 && d.image_size % v.patch_size != 0)
    k.fail("data.image_size",
           fmt::format("a multiple of model.vision.patch_size ({})", v.patch_size),
           fmt::format("{}", d.image_size),
           fmt::format("try {}", (d.image_size / v.patch_size) * v.patch_size));
  if (d.source_size != 0 && (d.source_size < d.image_size || d.source_size > 8192))
    k.fail("data.source_size",
           fmt::format("0 (= data.image_size) or a size in [data.image_size ({}), 8192]",
                       d.image_size),
           fmt::format("{}", d.source_size),
           "shards packed at 256 px for a 224 px model: data.source_size: 256");
  k.closed("data.context_length", d.context_length, 4, 512);
  if (t.max_position > 0 && d.context_length > t.max_position)
    k.fail("data.context_length",
           fmt::format("at most model.text.max_position ({})", t.max_position),
           fmt::format("{}", d.context_length));
  k.one_of("data.tokenizer.type", d.tokenizer.type, {"auto", "wordpiece", "sentencepiece"});
  check_augment(k, "data.augment", d.augment, "the reference uses [0.9, 1.0]");
  for (double m : d.mean) k.finite("data.mean", m);
  for (double s : d.std) k.gt("data.std", s, 0.0, "every channel's std divides the pixel values");
  k.ge("data.workers", d.workers, 0);
  k.ge("data.prefetch", d.prefetch, 1);
  if (d.max_image_pixels != 0 && d.max_image_pixels < 256 * 256)
    k.fail("data.max_image_pixels", "0 (no limit) or at least 65536 (256 x 256)",
           fmt::format("{}", d.max_image_pixels),
           "the limit counts pixels (width x height), not megapixels: 40000000 is 40 MP");

  // loss
  k.one_of("loss.duplicates", c.loss.duplicates, {"negative", "positive"});
  const auto& w = c.loss.weights;
  k.ge("loss.weights.patient", w.patient, 0.0);
  k.ge("loss.weights.left", w.left, 0.0);
  k.ge("loss.weights.right", w.right, 0.0);
  if (w.patient == 0 && w.left == 0 && w.right == 0)
    k.fail("loss.weights", "at least one weight > 0", "all three 0",
           "the reference weighs patient, left and right 1.0 each");
  k.gt("loss.logit_scale_max", c.loss.logit_scale_max, 0.0, "ln 100 = 4.605 as OpenCLIP");

  // optim
  const auto& o = c.optim;
  k.gt("optim.lr", o.lr, 0.0, "the reference uses 3e-5");
  k.ge("optim.weight_decay", o.weight_decay, 0.0);
  for (const auto& n : o.no_decay)
    if (n.empty()) k.fail("optim.no_decay", "non-empty name fragments", "an empty item");
  k.half_open("optim.betas", o.betas[0], 0.0, 1.0);
  k.half_open("optim.betas", o.betas[1], 0.0, 1.0);
  k.gt("optim.eps", o.eps, 0.0);
  k.ge("optim.warmup_steps", o.warmup_steps, 0);
  k.one_of("optim.schedule", o.schedule, {"cosine", "constant", "const-cooldown"});
  k.ge("optim.min_lr", o.min_lr, 0.0);
  if (o.min_lr > o.lr)
    k.fail("optim.min_lr", fmt::format("at most optim.lr ({})", o.lr), fmt::format("{}", o.min_lr));
  k.ge("optim.cooldown_steps", o.cooldown_steps, 0);
  k.ge("optim.clip_norm", o.clip_norm, 0.0, "0 turns clipping off");
  k.ge("optim.accum_steps", o.accum_steps, 1);

  // train
  const auto& tr = c.train;
  k.ge("train.steps", tr.steps, 0, "0 derives the steps from train.epochs");
  if (tr.steps == 0)
    k.ge("train.epochs", tr.epochs, 1, "train.steps is 0, so the run length comes from epochs");
  else
    k.ge("train.epochs", tr.epochs, 0);
  k.ge("train.batch_size", tr.batch_size, 1);
  k.one_of("train.device", tr.device, {"auto", "cpu", "cuda"});
  k.ge("train.threads", tr.threads, 0, "0 uses every core available");
  k.ge("train.freeze.vision_blocks", tr.freeze.vision_blocks, 0);
  k.ge("train.freeze.text_blocks", tr.freeze.text_blocks, 0);
  k.ge("train.val_every", tr.val_every, 0, "0 validates at each epoch end");
  k.ge("train.max_skipped_steps", tr.max_skipped_steps, 0);

  // checkpoint
  k.ge("checkpoint.every_steps", c.checkpoint.every_steps, 1);
  k.ge("checkpoint.every_epochs", c.checkpoint.every_epochs, 0);
  k.ge("checkpoint.keep_last", c.checkpoint.keep_last, 1);
  k.ge("checkpoint.keep_every", c.checkpoint.keep_every, 0, "0 keeps no extra checkpoints");

  // log
  k.ge("log.interval", c.log.interval, 1);
  k.one_of("log.level", c.log.level, {"debug", "info", "warn", "error"});

  // dist
  k.one_of("dist.backend", c.dist.backend, {"auto", "gloo", "nccl"});
  if (c.dist.backend == "nccl" && tr.device == "cpu")
    k.fail("dist.backend", "gloo or auto when train.device is cpu", "`nccl`",
           "NCCL only moves CUDA tensors");
  k.gt("dist.timeout_s", c.dist.timeout_s, 0.0);
  k.gt("dist.bucket_mb", c.dist.bucket_mb, 0.0);

  // eval
  const auto& pr = c.eval.probe;
  k.ge("eval.probe.every_steps", pr.every_steps, 0, "0 turns the probe off");
  if (pr.every_steps > 0 && pr.data.empty())
    k.fail("eval.probe.data", "a labelled manifest or class folder when eval.probe.every_steps > 0",
           "nothing", "set eval.probe.data, or eval.probe.every_steps: 0");
  k.ge("eval.probe.shots", pr.shots, 0, "0 trains on all of train");
  k.half_open("eval.probe.val_fraction", pr.val_fraction, 0.0, 1.0);
  k.half_open("eval.probe.test_fraction", pr.test_fraction, 0.0, 1.0);
  if (pr.every_steps > 0 && pr.ignore_split && pr.test_fraction <= 0)
    k.fail("eval.probe.test_fraction",
           "a fraction in (0, 1) when eval.probe.ignore_split draws every split anew", "0",
           "set eval.probe.test_fraction, e.g. 0.5");

  // finetune (finetune.data is checked by `retclip finetune`, which needs it)
  const auto& f = c.finetune;
  k.one_of("finetune.head_init", f.head_init, {"random", "zeroshot"});
  if (f.head_init == "zeroshot") {
    // The head's rows are text embeddings: they score the projected, normalised image
    // embedding, from a model that has the text tower and the prompts of every class.
    if (f.feature != Feature::kPostProj)
      k.fail("finetune.feature", "post_proj with finetune.head_init=zeroshot",
             fmt::format("`{}`", name(f.feature)),
             "--set finetune.feature=post_proj (text embeddings live in the projected space)");
    if (f.prompts.empty())
      k.fail("finetune.prompts", "a prompt file with finetune.head_init=zeroshot", "nothing",
             "--set finetune.prompts=configs/prompts/synth-findings.yaml (the format retclip "
             "zeroshot --prompts reads, one entry per class in finetune.classes order)");
    if (f.init.empty())
      k.fail("finetune.init",
             "a retclip export with the text tower or a pretraining "
             "checkpoint with finetune.head_init=zeroshot",
             "nothing", "--set finetune.init=runs/demo/export (retclip export --parts full)");
  }
  k.ge("finetune.epochs", f.epochs, 1);
  k.ge("finetune.steps", f.steps, 0, "0 runs finetune.epochs epochs");
  k.ge("finetune.batch_size", f.batch_size, 1);
  k.gt("finetune.blr", f.blr, 0.0, "RETFound uses 5e-3 (lr = blr x batch / 256)");
  k.ge("finetune.lr", f.lr, 0.0, "0 derives the lr from finetune.blr");
  k.ge("finetune.min_lr", f.min_lr, 0.0);
  k.ge("finetune.warmup_epochs", f.warmup_epochs, 0.0);
  k.closed("finetune.layer_decay", f.layer_decay, 1e-6, 1.0);
  k.ge("finetune.weight_decay", f.weight_decay, 0.0);
  k.half_open("finetune.betas", f.betas[0], 0.0, 1.0);
  k.half_open("finetune.betas", f.betas[1], 0.0, 1.0);
  k.gt("finetune.eps", f.eps, 0.0);
  k.ge("finetune.clip_norm", f.clip_norm, 0.0, "0 turns clipping off");
  k.ge("finetune.accum_steps", f.accum_steps, 1);
  k.half_open("finetune.drop_path", f.drop_path, 0.0, 1.0);
  k.half_open("finetune.label_smoothing", f.label_smoothing, 0.0, 1.0);
  k.ge("finetune.mixup", f.mixup, 0.0, "0 turns mixup off");
  k.ge("finetune.cutmix", f.cutmix, 0.0, "0 turns cutmix off");
  k.one_of("finetune.class_weights", f.class_weights, {"none", "balanced"});
  k.one_of("finetune.select", f.select,
           {"retfound", "auroc_macro", "aupr_macro", "f1_macro", "kappa", "kappa_linear",
            "kappa_quadratic", "accuracy", "balanced_accuracy"});
  check_augment(k, "finetune.augment", f.augment, "RETFound (timm) uses [0.08, 1.0]");
  k.half_open("finetune.val_fraction", f.val_fraction, 0.0, 1.0);
  k.half_open("finetune.test_fraction", f.test_fraction, 0.0, 1.0);
}

}  // namespace retclip::config::detail

namespace retclip::config {

const std::vector<std::pair<std::string, VisionPresetSizes>>& vision_presets() {
  static const std::vector<std::pair<std::string, VisionPresetSizes>> t{
      {"ViT-B-16", {512, 224, 12, 768, 16}},
      {"ViT-L-14", {768, 224, 24, 1024, 14}},
      {"ViT-S-8", {512, 224, 12, 384, 8}},
      {"vit-tiny", {128, 64, 4, 128, 8}},
      {"vit-micro", {32, 32, 2, 64, 8}}};
  return t;
}

const std::vector<std::pair<std::string, TextPresetSizes>>& text_presets() {
  static const std::vector<std::pair<std::string, TextPresetSizes>> t{
      {"RoBERTa-wwm-ext-base-chinese", {21128, 768, 12, 12, 3072, 512}},
      {"RoBERTa-wwm-ext-large-chinese", {21128, 1024, 24, 16, 4096, 512}},
      {"RBT3-chinese", {21128, 768, 3, 12, 3072, 512}},
      {"bert-base-uncased", {30522, 768, 12, 12, 3072, 512}},
      {"bert-tiny", {0, 128, 2, 2, 512, 128}},
      {"bert-micro", {0, 64, 2, 2, 128, 64}}};
  return t;
}

namespace {
template <typename Sizes>
std::vector<std::string> names_of(const std::vector<std::pair<std::string, Sizes>>& table,
                                  const char* from_files) {
  std::vector<std::string> out;
  for (const auto& [name, _] : table) out.push_back(name);
  out.push_back(from_files);
  return out;
}
}  // namespace

const std::vector<std::string>& vision_preset_names() {
  static const std::vector<std::string> names = names_of(vision_presets(), kVisionFromCheckpoint);
  return names;
}

const std::vector<std::string>& text_preset_names() {
  static const std::vector<std::string> names = names_of(text_presets(), kTextFromHf);
  return names;
}

}  // namespace retclip::config
