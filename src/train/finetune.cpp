// Fine-tuning (see finetune.hpp): what `retclip finetune` brings to the one loop
// (loop.hpp) besides its ClassifierTask. Sections: the labelled data, the model and its
// initialisation, the selection record, the recipe, the end (test once, export), the
// command.
#include "retclip/train/finetune.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "retclip/data/loader.hpp"
#include "retclip/data/sampler.hpp"
#include "retclip/dist/comm.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/eval/metrics.hpp"
#include "retclip/eval/predict.hpp"
#include "retclip/eval/zeroshot.hpp"
#include "retclip/io/checkpoint_store.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/loss/classification.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/metrics.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/schedule.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/train/task.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/version.hpp"

namespace retclip::train {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double selection_score(const std::string& select, const std::map<std::string, double>& s,
                       bool multi_label) {
  auto get = [&](const char* k) {
    auto it = s.find(k);
    return it == s.end() ? std::nan("") : it->second;
  };
  if (select != "retfound") return get(select.c_str());
  if (multi_label) return (get("f1_macro") + get("auroc_macro")) / 2;
  return (get("f1_macro") + get("auroc_macro") + get("kappa")) / 3;
}

namespace {

json num(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

json scalars_json(const std::map<std::string, double>& m) {
  json j = json::object();
  for (const auto& [k, v] : m) j[k] = num(v);
  return j;
}

// ---- the labelled data --------------------------------------------------------------

/// One split: its items and their 0/1 targets [N, C].
struct Split {
  std::string name;
  std::vector<data::LabelledItem> items;
  at::Tensor targets;  ///< [N, C] float
  at::Tensor labels;   ///< [N] int64 (single-label)
  int64_t size() const { return static_cast<int64_t>(items.size()); }
};

Split split_of(const data::LabelledSet& set, const std::string& name) {
  Split s;
  s.name = name;
  std::vector<at::Tensor> t;
  std::vector<int64_t> y;
  for (int64_t i : set.indices(name)) {
    const auto& it = set.items[static_cast<size_t>(i)];
    s.items.push_back(it);
    t.push_back(torch::tensor(it.target, torch::kFloat));
    y.push_back(it.label);
  }
  const int64_t c = static_cast<int64_t>(set.classes.size());
  s.targets = t.empty() ? torch::zeros({0, c}) : torch::stack(t);
  s.labels = torch::tensor(y, torch::kLong);
  return s;
}

/// The training loader: finetune.batch_size rows per rank, shuffled, the last partial
/// batch dropped, finetune.augment, bad rows as data.on_bad_sample says.
data::LoaderOptions train_loader_options(const config::Config& cfg, int64_t rank, int64_t world) {
  data::LoaderOptions lo;
  lo.batch_size = cfg.finetune.batch_size;
  lo.image_size = cfg.data.image_size;
  lo.context_length = 4;
  lo.workers = cfg.data.workers;
  lo.prefetch = cfg.data.prefetch;
  lo.mean = cfg.data.mean;
  lo.std = cfg.data.std;
  lo.seed = cfg.train.seed;
  lo.shuffle = true;
  lo.drop_last = true;
  lo.rank = rank;
  lo.world = world;
  lo.pin_memory = torch::cuda::is_available() && cfg.train.device != "cpu";
  lo.policy = cfg.data.on_bad_sample;
  const auto& a = cfg.finetune.augment;
  lo.augment = {a.enabled,
                a.crop_scale,
                a.color_jitter,
                a.random_erasing,
                a.hflip,
                a.interpolation == "bicubic",
                a.jitter_order == "random"};
  return lo;
}

/// Probabilities [N, C] of a split's items through the one inference loop (eval mode,
/// no gradient, autocast; validation and test rows are never replaced: a bad one fails).
at::Tensor predict_split(model::Classifier& net, const config::Config& cfg, const Split& s,
                         const at::Device& device, Precision precision) {
  eval::InferenceOptions o;
  o.data = cfg.data;
  o.batch_size = cfg.finetune.batch_size;
  o.workers = cfg.data.workers;
  o.device = device;
  o.precision = precision;
  return eval::classify_items(net, s.items, o).probs;
}

/// A split's metric scalars; multi-label F1 at `thresholds` (tuned on this split when
/// empty, and returned through it).
std::map<std::string, double> score_split(const at::Tensor& probs, const Split& s, bool multi_label,
                                          std::vector<double>* thresholds) {
  if (!multi_label) return eval::single_label_metrics(probs, s.labels).scalars();
  if (thresholds->empty()) *thresholds = eval::tune_f1_thresholds(probs, s.targets);
  return eval::multi_label_metrics(probs, s.targets, *thresholds).scalars();
}

}  // namespace

data::LabelledSet read_finetune_set(const config::Config& cfg) {
  const auto& f = cfg.finetune;
  RETCLIP_CHECK_USAGE(!f.data.empty(),
                      "finetune.data is empty: fine-tuning needs a labelled set. HINT: "
                      "--set finetune.data=labels.csv (a manifest with label columns or a "
                      "<root>/{train,val,test}/<class>/ folder; docs/FINETUNE.md)");
  data::LabelOptions lo;
  lo.path = f.data;
  lo.level = f.level;
  lo.classes = f.classes;
  lo.val_fraction = f.val_fraction;
  lo.test_fraction = f.test_fraction;
  lo.seed = f.split_seed;
  lo.policy = cfg.data.on_bad_sample;
  lo.option_section = "finetune";  // hints name finetune.* keys, not probe flags
  lo.can_ignore_split = false;
  data::LabelledSet set = data::read_labelled(lo);
  data::require_splits(set, lo, {"train", "val"}, "fine-tuning");
  RETCLIP_CHECK_USAGE(
      !(set.multi_label && (f.select.rfind("kappa", 0) == 0 || f.select == "accuracy" ||
                            f.select == "balanced_accuracy")),
      "finetune.select=", f.select, " has no multi-label value (", f.data,
      " is multi-label). HINT: finetune.select=retfound or auroc_macro");
  return set;
}

namespace {

// ---- the model and its initialisation ----------------------------------------------

/// The model section the vision tower is built from: the initial weights' own (a retclip
/// export or checkpoint records it), else the run's.
config::ModelConfig init_model_config(const config::Config& cfg, io::StateDict* weights,
                                      std::string* kind) {
  const std::string& init = cfg.finetune.init;
  if (init.empty()) {
    *kind = cfg.model.init.vision.empty() ? "random" : "clip";
    return cfg.model;
  }
  const fs::path dir(init);
  RETCLIP_CHECK_USAGE(fs::exists(dir), "finetune.init: ", init,
                      " does not exist. HINT: a retclip export directory, a checkpoint or run "
                      "directory, an image tower's weights file (timm, RETFound, DINOv2), or "
                      "empty for model.init.vision / random");
  if (fs::is_regular_file(dir)) {
    // An image tower's weights (timm / RETFound / DINOv2 / CLIP): the tower the file holds,
    // at data.image_size when set (the position embedding is resampled to it).
    config::ModelConfig m = cfg.model;
    m.vision = config::VisionConfig{};
    m.vision.preset = config::kVisionFromCheckpoint;
    m.vision.image_size = cfg.data.image_size;
    m.vision.pool = cfg.model.vision.pool;  // e.g. avg_fc_norm: RETFound's recipe
    m.embed_dim = 0;
    m.init = {};
    m.init.vision = init;
    io::resolve_pretrained_presets(m);
    *kind = "weights";
    return m;
  }
  config::Config src;
  if (fs::exists(dir / "retclip.json")) {
    json side = json::parse(util::read_file(dir / "retclip.json"));
    RETCLIP_CHECK_USAGE(
        side.value("format", "") == "retclip-export", (dir / "retclip.json").string(),
        " is not a retclip export (finetune.init). HINT: retclip export writes one");
    src =
        config::load_string(side.at("config").get<std::string>(), (dir / "retclip.json").string());
    const auto& files = side.at("files");
    const std::string part = files.contains("vision") ? "vision" : "full";
    RETCLIP_CHECK_USAGE(files.contains(part), init,
                        " has no vision.safetensors or full.safetensors (finetune.init). HINT: "
                        "export with --parts vision");
    *weights = io::load_weights(dir / files.at(part).get<std::string>());
    *kind = "retclip-export";
  } else {
    const io::CheckpointContents ck = io::open_checkpoint(init);
    src = config::load_string(ck.config_yaml, (ck.dir / io::CheckpointLayout::kConfig).string());
    *weights = io::load_weights(ck.weights);
    *kind = "retclip-checkpoint";
  }
  config::ModelConfig m = src.model;
  m.init = {};  // the weights come from finetune.init
  return m;
}

/// finetune.head_init=zeroshot: the head's weight [C, E] (eye level [2C, E]: left-eye
/// rows, then right-eye rows), each level's class text embeddings of finetune.prompts from
/// finetune.init's text tower times that level's logit scale: with the normalised feature
/// and bias 0 the logits are eval::run_zeroshot's scale x cosine. Checked before any tower
/// weight is read.
at::Tensor zeroshot_head_weight(const config::Config& cfg, const data::LabelledSet& set) {
  const auto& f = cfg.finetune;
  RETCLIP_CHECK_USAGE(fs::exists(f.init), "finetune.init: ", f.init,
                      " does not exist. HINT: finetune.head_init=zeroshot needs a retclip export "
                      "with the text tower (retclip export --parts full) or a checkpoint");
  const eval::PromptSet prompts = eval::load_prompts(f.prompts);
  RETCLIP_CHECK_USAGE(prompts.classes == set.classes, "finetune.prompts: ", f.prompts,
                      " has classes [", fmt::format("{}", fmt::join(prompts.classes, ",")),
                      "] but finetune.data ", set.source, " has [",
                      fmt::format("{}", fmt::join(set.classes, ",")),
                      "]. HINT: the prompt file lists one entry per class in the label order "
                      "(finetune.classes)");
  if (set.level == config::Level::kEye)
    for (const auto& it : set.items)
      RETCLIP_CHECK_USAGE(it.eye != data::Eye::kUnknown, it.origin,
                          ": finetune.head_init=zeroshot at eye level scores each eye with its "
                          "left or right text head, but this eye's laterality is unknown. HINT: "
                          "a manifest with left/right label columns, or finetune.head_init=random");
  eval::Encoder enc = eval::load_encoder(f.init);
  RETCLIP_CHECK_USAGE(enc.has_text && !enc.tokenizer_path.empty(), "finetune.init: ", f.init,
                      " has no text tower or tokenizer, which finetune.head_init=zeroshot embeds "
                      "the prompts with. HINT: retclip export --parts full, or pass the "
                      "pretraining checkpoint");
  // CPU: a few prompts per class; the image side of zero-shot is what the run device does.
  const eval::ClassEmbeddings e = eval::class_embeddings(enc, prompts, at::Device(at::kCPU));
  using model::Level;
  if (set.level == config::Level::kPatient) return e.text[Level::kPatient] * e.scale[Level::kPatient];
  return torch::cat({e.text[Level::kLeft] * e.scale[Level::kLeft],
                     e.text[Level::kRight] * e.scale[Level::kRight]},
                    0);
}

}  // namespace

model::Classifier build_finetune_classifier(const config::Config& cfg, const data::LabelledSet& set,
                                            std::string* init_kind_out) {
  const auto& f = cfg.finetune;
  const bool zeroshot = f.head_init == "zeroshot";
  const at::Tensor zs_weight = zeroshot ? zeroshot_head_weight(cfg, set) : at::Tensor();
  std::string kind;
  std::string* init_kind = init_kind_out ? init_kind_out : &kind;
  io::StateDict init;
  const config::ModelConfig mc = init_model_config(cfg, &init, init_kind);
  model::VisionTransformerOptions vo = model::retclip_options(mc, 8).vision();
  vo.drop_path(f.drop_path).grad_checkpointing(false);
  RETCLIP_CHECK_USAGE(vo.image_size() == cfg.data.image_size, "data.image_size (",
                      cfg.data.image_size, ") differs from the vision tower's image size (",
                      vo.image_size(), "). HINT: --set data.image_size=", vo.image_size());
  const auto co = model::ClassifierOptions(vo, static_cast<int64_t>(set.classes.size()))
                      .multi_label(set.multi_label)
                      .level(set.level)
                      .feature(f.feature)
                      .normalize(zeroshot)
                      .per_eye(zeroshot && set.level == config::Level::kEye);
  torch::manual_seed(cfg.train.seed);
  model::Classifier net(co);
  if (*init_kind == "clip") {
    auto rep = io::load_pretrained(*net, cfg.model.init.vision, io::Pretrained::kVision,
                                   "model.init.vision", vo.grid());
    log::info("model.init.vision: {}", rep.to_string());
  } else if (*init_kind == "weights") {
    auto rep =
        io::load_pretrained(*net, f.init, io::Pretrained::kVision, "finetune.init", vo.grid());
    log::info("finetune.init: {}", rep.to_string());
  } else if (!init.empty()) {
    io::StateDict keep;
    for (const auto& [k, v] : init)
      if (k.rfind("visual.", 0) == 0 ||
          (net->global_feature_mapping && k == "global_feature_mapping.weight") ||
          (co.per_eye() &&
           (k == "left_feature_mapping.weight" || k == "right_feature_mapping.weight")))
        keep.emplace_back(k, v);
    auto rep = io::apply_state_dict(*net, keep, /*strict=*/false);
    for (const auto& k : rep.missing)
      RETCLIP_CHECK_USAGE(k.rfind("head.", 0) == 0, "finetune.init ", f.init, " lacks ", k,
                          ". HINT: export the vision tower (retclip export --parts vision)");
    log::info("finetune.init: {} tensors from {}", rep.loaded.size(), f.init);
  }
  if (zeroshot) {
    torch::NoGradGuard ng;
    net->head->weight.copy_(zs_weight);
    net->head->bias.zero_();
    log::info("finetune.head_init=zeroshot: {} class text embeddings ({} level) from {}",
              set.classes.size(), config::name(set.level), f.prompts);
  }
  apply_classifier_freeze(net, f.freeze);
  return net;
}

void apply_classifier_freeze(model::Classifier& net, const config::Freeze& freeze) {
  using Kind = config::Freeze::Kind;
  if (freeze.kind == Kind::kNone) return;
  if (freeze.kind == Kind::kHeadOnly) {
    for (auto& p : net->named_parameters())
      if (p.key().rfind("head.", 0) != 0) p.value().set_requires_grad(false);
    return;
  }
  const int64_t layers = net->options().vision().layers();
  RETCLIP_CHECK_USAGE(freeze.blocks <= layers, "finetune.freeze=", config::name(freeze),
                      " but the ViT has ", layers, " blocks. HINT: finetune.freeze=first-", layers,
                      "-blocks at most");
  freeze_vision_blocks(*net, freeze.blocks);
}

LayerDecayOptimizer finetune_optimizer(const config::Config& cfg, model::Classifier& net) {
  const auto& f = cfg.finetune;
  LayerDecayOptions ldo;
  ldo.layers = net->options().vision().layers();
  ldo.layer_decay = f.layer_decay;
  ldo.weight_decay = f.weight_decay;
  ldo.no_decay = cfg.optim.no_decay;
  ldo.betas = f.betas;
  ldo.eps = f.eps;
  return build_layer_decay_adamw(*net, ldo);
}

namespace {

// ---- the selection record -----------------------------------------------------------

/// Validation history and the best epoch so far; lives in TrainState::data, so a
/// resumed run continues the same selection.
struct Selection {
  json history = json::array();
  int64_t best_epoch = 0, best_step = 0;
  double best_score = -std::numeric_limits<double>::infinity();
  std::string best_file;  ///< weights of the best epoch, relative to the run directory

  /// Records epoch `epoch`'s score; true when it is the new best (strictly higher than
  /// every earlier epoch, so ties keep the earliest; the first epoch is always a best).
  bool add(int64_t epoch, int64_t step, double score, const json& val) {
    history.push_back({{"epoch", epoch}, {"step", step}, {"score", num(score)}, {"val", val}});
    const bool better = best_epoch == 0 || (std::isfinite(score) && score > best_score);
    if (better) {
      best_epoch = epoch;
      best_step = step;
      best_score = std::isfinite(score) ? score : -std::numeric_limits<double>::infinity();
    }
    return better;
  }
  json to_json() const {
    return {{"history", history},
            {"best_epoch", best_epoch},
            {"best_step", best_step},
            {"best_score", num(best_score)},
            {"best_file", best_file}};
  }
  static Selection from_json(const json& j) {
    Selection s;
    if (j.is_null()) return s;
    s.history = j.at("history");
    s.best_epoch = j.at("best_epoch").get<int64_t>();
    s.best_step = j.at("best_step").get<int64_t>();
    s.best_score = j.at("best_score").is_null() ? -std::numeric_limits<double>::infinity()
                                                : j.at("best_score").get<double>();
    s.best_file = j.at("best_file").get<std::string>();
    return s;
  }
};

json loader_state(const data::Loader& l) {
  const auto s = l.state();
  return {{"epoch", s.epoch}, {"consumed", s.consumed}};
}

void loader_restore(data::Loader& l, const json& j) {
  data::LoaderState s;
  s.epoch = j.at("epoch").get<int64_t>();
  s.consumed = j.at("consumed").get<int64_t>();
  l.restore(s);
}

json recipe_json(const config::FinetuneConfig& f, double lr, int64_t warmup, int64_t batch) {
  return {{"lr", lr},
          {"blr", f.blr},
          {"global_batch", batch},
          {"lr_rule", f.lr > 0 ? "finetune.lr" : "blr x global batch / 256"},
          {"min_lr", f.min_lr},
          {"warmup_steps", warmup},
          {"schedule", "warmup + cosine"},
          {"layer_decay", f.layer_decay},
          {"weight_decay", f.weight_decay},
          {"betas", f.betas},
          {"eps", f.eps},
          {"drop_path", f.drop_path},
          {"label_smoothing", f.label_smoothing},
          {"mixup", f.mixup},
          {"cutmix", f.cutmix},
          {"class_weights", f.class_weights},
          {"freeze", config::name(f.freeze)},
          {"augment",
           {{"enabled", f.augment.enabled},
            {"crop_scale", f.augment.crop_scale},
            {"color_jitter", f.augment.color_jitter},
            {"random_erasing", f.augment.random_erasing},
            {"hflip", f.augment.hflip}}}};
}

// ---- the recipe -----------------------------------------------------------------------

/// The labelled set of a run and its splits.
struct FinetuneData {
  data::LabelledSet set;
  Split train, val, test;
  bool multi = false;
  const char* unit() const { return set.level == config::Level::kEye ? "images" : "patients"; }
};

/// The schedule of lr_at (schedule.hpp): lr = finetune.lr, or blr x global batch / 256;
/// warmup over finetune.warmup_epochs, then cosine to finetune.min_lr.
config::OptimConfig finetune_schedule(const config::FinetuneConfig& f, int64_t global_batch,
                                      int64_t per_epoch) {
  config::OptimConfig sched;
  sched.lr = f.lr > 0 ? f.lr : f.blr * static_cast<double>(global_batch) / 256.0;
  sched.min_lr = std::min(f.min_lr, sched.lr);
  sched.warmup_steps = static_cast<int64_t>(std::llround(f.warmup_epochs * per_epoch));
  sched.schedule = "cosine";
  return sched;
}

/// Fine-tuning: the training split's batches (targets smoothed, mixed), the finetune/*
/// metrics, validation and epoch selection at every epoch end, a checkpoint at every
/// epoch end and every checkpoint.every_steps steps.
class FinetuneRecipe : public Recipe {
 public:
  FinetuneRecipe(const config::Config& cfg, const Run& run, const FinetuneData& d,
                 model::Classifier net, Precision precision)
      : cfg_(cfg),
        f_(cfg.finetune),
        run_(run),
        d_(d),
        net_(std::move(net)),
        precision_(precision),
        loader_(eval::make_item_source(d.train.items, d.set.level, cfg.data.image_size, 4,
                                       cfg.data.max_image_pixels, cfg.data.preprocess),
                nullptr, train_loader_options(cfg, run.env.rank, run.env.world)) {
    per_epoch_ = loader_.steps_per_epoch();
    RETCLIP_CHECK_USAGE(per_epoch_ > 0, "the training split (", d.train.size(),
                        " rows) does not fill one global batch of ", f_.batch_size * run.env.world,
                        " (finetune.batch_size x ranks). HINT: lower finetune.batch_size");
    total_ = f_.steps > 0 ? f_.steps : f_.epochs * per_epoch_;
    sched_ = finetune_schedule(f_, global_batch(), per_epoch_);
  }

  int64_t global_batch() const { return f_.batch_size * run_.env.world; }
  const config::OptimConfig& schedule() const { return sched_; }
  const Selection& selection() const { return sel_; }

  std::string describe() const override {
    return fmt::format(
        "fine-tuning {} steps ({} per epoch, batch {} {} per rank x {} ranks, lr {:.3e}, "
        "precision {})",
        total_, per_epoch_, f_.batch_size, d_.unit(), run_.env.world, sched_.lr,
        config::name(precision_));
  }
  int64_t steps_per_epoch() const override { return per_epoch_; }
  int64_t total_steps() const override { return total_; }
  double lr(int64_t step) const override { return lr_at(sched_, step, total_); }
  MicroBatch next_batch(int64_t step) override;
  json state() const override {
    return {{"loader", loader_state(loader_)}, {"selection", sel_.to_json()}};
  }
  void restore(const json& s) override {
    loader_restore(loader_, s.at("loader"));
    sel_ = Selection::from_json(s.value("selection", json()));
  }
  void log(int64_t step, const StepResult& r, double lr, const StepWindow& w,
           MetricsSink& sinks) override;
  void after_step(int64_t step, MetricsSink& sinks) override {
    if (epoch_end(step)) validate(step, sinks);
  }
  bool checkpoint_due(int64_t step) const override {
    return epoch_end(step) || step % cfg_.checkpoint.every_steps == 0;
  }
  void after_loop(int64_t, bool, MetricsSink&) override {}

 private:
  bool epoch_end(int64_t step) const { return step % per_epoch_ == 0 || step == total_; }
  void validate(int64_t step, MetricsSink& sinks);

  const config::Config& cfg_;
  const config::FinetuneConfig& f_;
  const Run& run_;
  const FinetuneData& d_;
  model::Classifier net_;
  Precision precision_;
  data::Loader loader_;
  int64_t per_epoch_ = 0, total_ = 0;
  config::OptimConfig sched_;
  Selection sel_;
};

MicroBatch FinetuneRecipe::next_batch(int64_t step) {
  auto b = loader_.next();
  if (!b) b = loader_.next();  // the end of an epoch: the next call starts the next one
  RETCLIP_CHECK(b.has_value(), "the fine-tuning loader produced no batch for a new epoch");
  const at::Device dev = run_.device;
  const bool patient = d_.set.level == config::Level::kPatient;
  at::Tensor idx = torch::tensor(b->indices, torch::kLong);
  at::Tensor target =
      loss::smooth_targets(d_.train.targets.index_select(0, idx), f_.label_smoothing, d_.multi);
  at::Tensor left = b->left.to(dev), right = b->right.to(dev);
  if (f_.mixup > 0 || f_.cutmix > 0) {
    loss::MixedBatch m =
        loss::mix_batch(left, patient ? right : at::Tensor(), target.to(dev), f_.mixup, f_.cutmix,
                        data::mix_seed(cfg_.train.seed, 7717 + step));
    left = m.left;
    if (patient) right = m.right;
    target = m.targets;
  }
  MicroBatch mb;
  mb.left = left;
  mb.right = right;
  mb.has_left = b->has_left.to(dev);
  mb.has_right = b->has_right.to(dev);
  mb.targets = target.to(dev);
  mb.is_right = eval::right_eye_rows(d_.train.items, b->indices);
  return mb;
}

void FinetuneRecipe::log(int64_t step, const StepResult& r, double lr, const StepWindow& w,
                         MetricsSink& sinks) {
  const double rate = w.seconds > 0 ? w.rows / w.seconds : 0;
  const double step_rate = w.busy_s > 0 ? w.rows / w.busy_s : 0;
  sinks.write(step,
              {{"finetune/loss", r.loss},
               {"finetune/lr", lr},
               {"finetune/grad_norm", r.grad_norm},
               {"finetune/rows_per_s", rate},
               {"finetune/step_rows_per_s", step_rate}},
              wall_time_s());
  log::info(
      "step {}/{} (epoch {}) | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.1f} {}/s "
      "({:.1f} {}/s in the step)",
      step, total_, (step - 1) / per_epoch_ + 1, r.loss, lr, r.grad_norm, rate, d_.unit(),
      step_rate, d_.unit());
}

// Rank 0 scores the validation split at the end of an epoch and keeps the best weights.
void FinetuneRecipe::validate(int64_t step, MetricsSink& sinks) {
  if (!run_.primary()) return;
  const int64_t epoch = (step - 1) / per_epoch_ + 1;
  at::Tensor probs = predict_split(net_, cfg_, d_.val, run_.device, precision_);
  std::vector<double> th;
  const auto scalars = score_split(probs, d_.val, d_.multi, &th);
  const double score = selection_score(f_.select, scalars, d_.multi);
  const bool best = sel_.add(epoch, step, score, scalars_json(scalars));
  std::map<std::string, double> m;
  for (const auto& [k, v] : scalars) m["val/" + k] = v;
  m["val/score"] = score;
  sinks.write(step, m, wall_time_s());
  log::info("epoch {} (step {}): val {} {:.4f} | auroc_macro {:.4f} | f1_macro {:.4f}{}", epoch,
            step, f_.select, score, scalars.at("auroc_macro"), scalars.at("f1_macro"),
            best ? " | best so far" : "");
  if (!best) return;
  const std::string name = fmt::format("best/epoch-{:04d}.safetensors", epoch);
  fs::create_directories(run_.dir / "best");
  io::save_weights(run_.dir / name, io::module_state_dict(*net_),
                   {{"epoch", std::to_string(epoch)}});
  sel_.best_file = name;
}

// ---- the end: the chosen epoch's weights score the test split once, then export ---------

/// What the end reports besides the selection: the chosen weights' validation scalars,
/// the thresholds tuned on them, the test split's metrics (null without one).
struct Scored {
  std::map<std::string, double> val;
  std::vector<double> thresholds;
  json test = nullptr;
};

Scored score_chosen(model::Classifier& net, const config::Config& cfg, const Run& run,
                    const FinetuneData& d, Precision precision) {
  Scored s;
  const at::Tensor val_probs = predict_split(net, cfg, d.val, run.device, precision);
  s.val = score_split(val_probs, d.val, d.multi, &s.thresholds);
  if (d.test.size() == 0) {
    log::warn(
        "{} has no test split: nothing scored after selection. HINT: set "
        "finetune.test_fraction or add a test split",
        cfg.finetune.data);
    return s;
  }
  const at::Tensor probs = predict_split(net, cfg, d.test, run.device, precision);
  std::vector<double> th = s.thresholds;
  s.test = d.multi
               ? eval::to_json(eval::multi_label_metrics(probs, d.test.targets, th), d.set.classes)
               : eval::to_json(eval::single_label_metrics(probs, d.test.labels), d.set.classes);
  s.test["score"] =
      num(selection_score(cfg.finetune.select, score_split(probs, d.test, d.multi, &th), d.multi));
  util::write_file_atomic(
      run.dir / "test_predictions.csv",
      eval::predictions_csv(d.test.items, probs, d.set.classes, "p_", d.test.targets));
  return s;
}

json selection_json(const config::FinetuneConfig& f, const Selection& sel, bool multi) {
  const std::string formula = f.select != "retfound" ? f.select
                              : multi                ? "(f1_macro + auroc_macro) / 2"
                                                     : "(f1_macro + auroc_macro + kappa) / 3";
  return {{"criterion", f.select},
          {"formula", formula},
          {"split", "val"},
          {"chosen_epoch", sel.best_epoch},
          {"chosen_step", sel.best_step},
          {"score", num(sel.best_score)},
          {"reason", fmt::format("epoch {} has the highest validation {} ({}) of the {} epochs "
                                 "scored (ties keep the earliest)",
                                 sel.best_epoch, f.select, formula, sel.history.size())},
          {"history", sel.history}};
}

/// results.json (without "export", which the caller adds).
json results_json(const config::Config& cfg, const Run& run, const FinetuneData& d,
                  const FinetuneRecipe& recipe, const Scored& s, const std::string& init_kind,
                  int64_t steps) {
  const auto& f = cfg.finetune;
  const auto& set = d.set;
  auto split = [&](const std::string& name, int64_t n) {
    return json{{"n", n}, {"hash", set.split_hash(name)}};
  };
  return {{"protocol", "finetune"},
          {"retclip_version", kVersion},
          {"task", d.multi ? "multi-label" : "single-label"},
          {"level", config::name(set.level)},
          {"feature", config::name(f.feature)},
          {"classes", set.classes},
          {"data", f.data},
          {"init",
           {{"kind", init_kind},
            {"path", init_kind == "clip" ? cfg.model.init.vision : f.init},
            {"head", f.head_init},
            {"prompts", f.head_init == "zeroshot" ? json(f.prompts) : json(nullptr)}}},
          {"recipe", recipe_json(f, recipe.schedule().lr, recipe.schedule().warmup_steps,
                                 recipe.global_batch())},
          {"steps", steps},
          {"steps_per_epoch", recipe.steps_per_epoch()},
          {"world_size", run.env.world},
          {"selection", selection_json(f, recipe.selection(), d.multi)},
          {"val", scalars_json(s.val)},
          {"thresholds", d.multi ? json(s.thresholds) : json(nullptr)},
          {"test", s.test},
          {"test_scored_once", d.test.size() > 0},
          {"splits",
           {{"train", split("train", d.train.size())},
            {"val", split("val", d.val.size())},
            {"test", split("test", d.test.size())},
            {"val_drawn", set.val_drawn},
            {"test_drawn", set.test_drawn},
            {"split_seed", set.split_seed}}},
          {"config_hash", run.config_hash}};
}

/// The export's sidecar: what `retclip predict` needs to read and score images as the
/// run did (classes, decision rule, preprocessing, precision) and where they came from.
json export_sidecar(const config::Config& cfg, const Run& run, const FinetuneData& d,
                    const json& results, Precision precision) {
  const auto& dc = cfg.data;
  const bool crop = dc.preprocess == data::Preprocess::kFundusCrop;
  return {{"classes", d.set.classes},
          {"task", d.multi ? "multi-label" : "single-label"},
          {"decision", d.multi ? "probability >= thresholds[c] (tuned for F1 on val)"
                               : "argmax of the probabilities"},
          {"thresholds", results.at("thresholds")},
          {"preprocessing",
           {{"preprocess", config::name(dc.preprocess)},
            {"fundus_crop", crop},
            {"resize", crop ? "field of view, pad to square, INTER_AREA"
                            : "whole photo to a square, INTER_AREA (bicubic when enlarging)"},
            {"image_size", dc.image_size},
            {"mean", dc.mean},
            {"std", dc.std}}},
          {"precision", config::name(precision)},
          {"init", results.at("init")},
          {"selection", results.at("selection")},
          {"test", results.at("test")},
          {"config", run.config_yaml}};
}

/// Rank 0 after a finished run: the chosen epoch's weights, the test split scored once,
/// results.json and the classifier export.
void finish(FinetuneSummary& summary, model::Classifier& net, const config::Config& cfg,
            const Run& run, const FinetuneData& d, const FinetuneRecipe& recipe,
            const std::string& init_kind, Precision precision) {
  const Selection& sel = recipe.selection();
  RETCLIP_CHECK(!sel.best_file.empty(), "fine-tuning finished without a validated epoch");
  io::apply_state_dict(*net, io::load_weights(run.dir / sel.best_file), /*strict=*/true);
  const Scored s = score_chosen(net, cfg, run, d, precision);
  json results = results_json(cfg, run, d, recipe, s, init_kind, summary.end_step);
  const fs::path export_dir = run.dir / "classifier";
  eval::save_classifier(export_dir, net, export_sidecar(cfg, run, d, results, precision));
  results["export"] = export_dir.string();
  util::write_file_atomic(run.dir / "results.json", results.dump(2));
  std::string test_line = "not scored (no test split)";
  if (!s.test.is_null() && s.test.contains("auroc_macro") && s.test.at("auroc_macro").is_number())
    test_line = fmt::format("macro AUROC {:.4f}", s.test.at("auroc_macro").get<double>());
  log::info("chosen: epoch {} (val {} {:.4f}); test {}; classifier exported to {}", sel.best_epoch,
            cfg.finetune.select, sel.best_score, test_line, export_dir.string());
  summary.results = results;
  summary.export_dir = export_dir.string();
}

// ---- the command ----------------------------------------------------------------------

FinetuneData finetune_data(const config::Config& cfg) {
  FinetuneData d;
  d.set = read_finetune_set(cfg);
  d.train = split_of(d.set, "train");
  d.val = split_of(d.set, "val");
  d.test = split_of(d.set, "test");
  d.multi = d.set.multi_label;
  log::info("finetune: {} ({} level, {}, {} classes) | train {} / val {} / test {} {}",
            cfg.finetune.data, config::name(d.set.level), d.multi ? "multi-label" : "single-label",
            d.set.classes.size(), d.train.size(), d.val.size(), d.test.size(), d.unit());
  return d;
}

FinetuneSummary run_finetune_impl(const config::Config& cfg, const TrainOptions& options,
                                  NewRunDir& new_dir) {
  const auto started = Clock::now();
  const auto& f = cfg.finetune;
  Run run = open_run(cfg, "finetune", f.precision);
  const Precision precision = model::resolve_precision(f.precision, run.device);
  const FinetuneData d = finetune_data(cfg);
  std::string init_kind;
  model::Classifier net = build_finetune_classifier(cfg, d.set, &init_kind);
  net->to(run.device);
  net->train();
  if (run.env.rank > 0) torch::manual_seed(cfg.train.seed + static_cast<uint64_t>(run.env.rank));
  LayerDecayOptimizer opt = finetune_optimizer(cfg, net);
  log::info(
      "init: {}{} | head {} | freeze {} | {}", init_kind,
      f.init.empty() ? (init_kind == "clip" ? " " + cfg.model.init.vision : "") : " " + f.init,
      f.head_init, config::name(f.freeze), opt.summary.to_string());
  FinetuneRecipe recipe(cfg, run, d, net, precision);
  const at::Tensor class_weight =
      f.class_weights == "balanced"
          ? loss::balanced_class_weights(d.train.targets, d.multi).to(run.device)
          : at::Tensor();
  auto task = std::make_shared<ClassifierTask>(net, class_weight, precision);
  StepOptions so;
  so.accum_steps = f.accum_steps;
  so.clip_norm = f.clip_norm;
  so.bucket_mb = cfg.dist.bucket_mb;
  so.lr_scale = opt.lr_scale;
  const LoopSummary l = run_loop(
      {cfg, run, recipe, task, *opt.optimizer, so, precision, started, /*sync_after_step=*/true},
      options, new_dir);
  FinetuneSummary summary;
  summary.rank = run.env.rank;
  summary.start_step = l.start_step;
  summary.end_step = l.end_step;
  summary.total_steps = recipe.total_steps();
  summary.interrupted = l.interrupted;
  summary.checkpoint = l.checkpoint;
  summary.best_epoch = recipe.selection().best_epoch;
  summary.best_score = recipe.selection().best_score;
  if (!summary.interrupted && run.primary())
    finish(summary, net, cfg, run, d, recipe, init_kind, precision);
  run.comm->barrier();
  return summary;
}

}  // namespace

FinetuneSummary run_finetune(const config::Config& cfg, const TrainOptions& options) {
  const int rank = dist::Env::from_environment().rank;
  claim_run_dir(cfg, "retclip finetune", options.overwrite, rank);
  NewRunDir guard(cfg, rank);
  try {
    return run_finetune_impl(cfg, options, guard);
  } catch (const std::exception& e) {
    log::write_file_only(log::Level::kError, e.what());
    throw;
  }
}

}  // namespace retclip::train
