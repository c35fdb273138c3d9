// The fine-tuning loop (see finetune.hpp). Sections: the labelled data, the model and its
// initialisation, scoring a split, the selection record, the loop, the end (test once,
// export).
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
#include "retclip/dist/grad_sync.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/eval/labels.hpp"
#include "retclip/eval/metrics.hpp"
#include "retclip/eval/zeroshot.hpp"
#include "retclip/io/checkpoint_store.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/classifier.hpp"
#include "retclip/train/metrics.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/schedule.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/train/state.hpp"
#include "retclip/train/step.hpp"
#include "retclip/train/tensorboard.hpp"
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

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

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
  std::vector<eval::LabelledItem> items;
  at::Tensor targets;  ///< [N, C] float
  at::Tensor labels;   ///< [N] int64 (single-label)
  int64_t size() const { return static_cast<int64_t>(items.size()); }
};

Split split_of(const eval::LabelledSet& set, const std::string& name) {
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

}  // namespace

eval::LabelledSet read_finetune_set(const config::Config& cfg) {
  const auto& f = cfg.finetune;
  RETCLIP_CHECK_USAGE(!f.data.empty(),
                      "finetune.data is empty: fine-tuning needs a labelled set. HINT: "
                      "--set finetune.data=labels.csv (a manifest with label columns or a "
                      "<root>/{train,val,test}/<class>/ folder; docs/FINETUNE.md)");
  eval::LabelOptions lo;
  lo.path = f.data;
  lo.level = f.level;
  lo.classes = f.classes;
  lo.val_fraction = f.val_fraction;
  lo.test_fraction = f.test_fraction;
  lo.seed = f.split_seed;
  lo.policy = data::parse_bad_sample_policy(cfg.data.on_bad_sample);
  lo.option_section = "finetune";  // hints name finetune.* keys, not probe flags
  lo.can_ignore_split = false;
  eval::LabelledSet set = eval::read_labelled(lo);
  eval::require_splits(set, lo, {"train", "val"}, "fine-tuning");
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
                      "directory, or empty for model.init.vision / random");
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
at::Tensor zeroshot_head_weight(const config::Config& cfg, const eval::LabelledSet& set) {
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
  if (set.level == "eye")
    for (const auto& it : set.items)
      RETCLIP_CHECK_USAGE(it.eye != eval::Eye::kUnknown, it.origin,
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
  if (set.level == "patient") return e.text[Level::kPatient] * e.scale[Level::kPatient];
  return torch::cat({e.text[Level::kLeft] * e.scale[Level::kLeft],
                     e.text[Level::kRight] * e.scale[Level::kRight]},
                    0);
}

}  // namespace

Classifier build_finetune_classifier(const config::Config& cfg, const eval::LabelledSet& set,
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
  ClassifierOptions co;
  co.vision = vo;
  co.classes = static_cast<int64_t>(set.classes.size());
  co.multi_label = set.multi_label;
  co.level = set.level;
  co.feature = f.feature;
  co.normalize = zeroshot;
  co.per_eye = zeroshot && set.level == "eye";
  torch::manual_seed(cfg.train.seed);
  Classifier net(co);
  if (*init_kind == "clip") {
    auto rep = io::load_pretrained(*net, cfg.model.init.vision, io::Pretrained::kVision,
                                   "model.init.vision", vo.grid());
    log::info("model.init.vision: {}", rep.to_string());
  } else if (!init.empty()) {
    io::StateDict keep;
    for (const auto& [k, v] : init)
      if (k.rfind("visual.", 0) == 0 ||
          (net->global_feature_mapping && k == "global_feature_mapping.weight") ||
          (co.per_eye &&
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
              set.classes.size(), set.level, f.prompts);
  }
  apply_classifier_freeze(net, f.freeze);
  return net;
}

namespace {

// ---- scoring a split ----------------------------------------------------------------

data::LoaderOptions loader_options(const config::Config& cfg, int64_t batch, bool train) {
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.image_size = cfg.data.image_size;
  lo.context_length = 4;
  lo.workers = cfg.data.workers;
  lo.prefetch = cfg.data.prefetch;
  lo.mean = cfg.data.mean;
  lo.std = cfg.data.std;
  lo.seed = cfg.train.seed;
  lo.shuffle = train;
  lo.drop_last = train;
  lo.pin_memory = torch::cuda::is_available() && cfg.train.device != "cpu";
  // Validation and test rows are never replaced by others: a bad one fails the run.
  lo.policy =
      train ? data::parse_bad_sample_policy(cfg.data.on_bad_sample) : data::BadSamplePolicy::kFail;
  if (train) {
    const auto& a = cfg.finetune.augment;
    lo.augment = {a.enabled,
                  a.crop_scale,
                  a.color_jitter,
                  a.random_erasing,
                  a.hflip,
                  a.interpolation == "bicubic",
                  a.jitter_order == "random"};
  }
  return lo;
}

/// Probabilities [N, C] of a split's items, in item order (eval mode, no gradient; the
/// module's mode is restored).
at::Tensor predict_split(Classifier& net, const config::Config& cfg, const Split& s,
                         const at::Device& device, Precision precision) {
  const bool was_training = net->is_training();
  net->eval();
  data::Loader loader(eval::make_item_source(s.items, net->options().level, cfg.data.image_size, 4,
                                             cfg.data.max_image_pixels,
                                             data::parse_preprocess(cfg.data.preprocess)),
                      nullptr, loader_options(cfg, cfg.finetune.batch_size, false));
  torch::NoGradGuard ng;
  std::vector<at::Tensor> rows(s.items.size());
  while (auto b = loader.next()) {
    at::Tensor logits;
    {
      AutocastScope scope(precision, device);
      logits = net->forward(b->left.to(device), b->right.to(device), b->has_left.to(device),
                            b->has_right.to(device), right_eye_rows(s.items, b->indices));
    }
    at::Tensor p = net->probabilities(logits).to(torch::kCPU);
    for (size_t j = 0; j < b->indices.size(); ++j) rows[b->indices[j]] = p[static_cast<int64_t>(j)];
  }
  if (was_training) net->train();
  return torch::stack(rows);
}

/// A split's metric scalars; multi-label F1 at `thresholds` (tuned on this split when
/// empty, and returned through it).
std::map<std::string, double> score_split(const at::Tensor& probs, const Split& s, bool multi_label,
                                          std::vector<double>* thresholds) {
  if (!multi_label) return eval::single_label_metrics(probs, s.labels).scalars();
  if (thresholds->empty()) *thresholds = eval::tune_f1_thresholds(probs, s.targets);
  return eval::multi_label_metrics(probs, s.targets, *thresholds).scalars();
}

std::string predictions_csv(const Split& s, const at::Tensor& probs,
                            const std::vector<std::string>& classes) {
  std::string csv = "id,patient_id,eye";
  for (const auto& c : classes) csv += ",p_" + c;
  for (const auto& c : classes) csv += ",true_" + c;
  csv += "\n";
  auto p = probs.accessor<float, 2>();
  auto t = s.targets.accessor<float, 2>();
  for (int64_t i = 0; i < s.size(); ++i) {
    const auto& it = s.items[static_cast<size_t>(i)];
    csv += fmt::format("{},{},{}", it.id, it.patient_id, eval::eye_name(it.eye));
    for (int64_t k = 0; k < p.size(1); ++k) csv += fmt::format(",{:.9g}", p[i][k]);
    for (int64_t k = 0; k < t.size(1); ++k) csv += fmt::format(",{:g}", t[i][k]);
    csv += "\n";
  }
  return csv;
}

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

Precision finetune_precision(const std::string& p, const at::Device& device) {
  if (p == "auto") return device.is_cuda() ? Precision::kBf16 : Precision::kFp32;
  return parse_precision(p);
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
          {"freeze", f.freeze},
          {"augment",
           {{"enabled", f.augment.enabled},
            {"crop_scale", f.augment.crop_scale},
            {"color_jitter", f.augment.color_jitter},
            {"random_erasing", f.augment.random_erasing},
            {"hflip", f.augment.hflip}}}};
}

// ---- the loop -----------------------------------------------------------------------

FinetuneSummary run_finetune_impl(const config::Config& cfg, const TrainOptions& options,
                                  NewRunDir& new_dir) {
  const auto t_start = Clock::now();
  const auto& f = cfg.finetune;
  Run run = open_run(cfg, "finetune", f.precision);
  const int rank = run.env.rank, world = run.env.world;
  const Precision precision = finetune_precision(f.precision, run.device);

  const eval::LabelledSet set = read_finetune_set(cfg);
  const Split train_split = split_of(set, "train"), val = split_of(set, "val"),
              test = split_of(set, "test");
  const bool multi = set.multi_label;
  log::info("finetune: {} ({} level, {}, {} classes) | train {} / val {} / test {} {}", f.data,
            set.level, multi ? "multi-label" : "single-label", set.classes.size(),
            train_split.size(), val.size(), test.size(),
            set.level == "eye" ? "images" : "patients");

  std::string init_kind;
  Classifier net = build_finetune_classifier(cfg, set, &init_kind);
  net->to(run.device);
  net->train();
  if (rank > 0) torch::manual_seed(cfg.train.seed + static_cast<uint64_t>(rank));
  const int64_t layers = net->options().vision.layers();
  LayerDecayOptions ldo;
  ldo.layers = layers;
  ldo.layer_decay = f.layer_decay;
  ldo.weight_decay = f.weight_decay;
  ldo.no_decay = cfg.optim.no_decay;
  ldo.betas = f.betas;
  ldo.eps = f.eps;
  LayerDecayOptimizer opt = build_layer_decay_adamw(*net, ldo);
  log::info(
      "init: {}{} | head {} | freeze {} | {}", init_kind,
      f.init.empty() ? (init_kind == "clip" ? " " + cfg.model.init.vision : "") : " " + f.init,
      f.head_init, f.freeze, opt.summary.to_string());

  data::LoaderOptions tlo = loader_options(cfg, f.batch_size, true);
  tlo.rank = rank;
  tlo.world = world;
  data::Loader loader(eval::make_item_source(train_split.items, set.level, cfg.data.image_size, 4,
                                             cfg.data.max_image_pixels,
                                             data::parse_preprocess(cfg.data.preprocess)),
                      nullptr, tlo);
  const int64_t per_epoch = loader.steps_per_epoch();
  RETCLIP_CHECK_USAGE(per_epoch > 0, "the training split (", train_split.size(),
                      " rows) does not fill one global batch of ", f.batch_size * world,
                      " (finetune.batch_size x ranks). HINT: lower finetune.batch_size");
  const int64_t total = f.steps > 0 ? f.steps : f.epochs * per_epoch;
  const int64_t global_batch = f.batch_size * world;
  config::OptimConfig sched;  // the schedule of lr_at (schedule.hpp)
  sched.lr = f.lr > 0 ? f.lr : f.blr * static_cast<double>(global_batch) / 256.0;
  sched.min_lr = std::min(f.min_lr, sched.lr);
  sched.warmup_steps = static_cast<int64_t>(std::llround(f.warmup_epochs * per_epoch));
  sched.schedule = "cosine";
  const at::Tensor class_weight =
      f.class_weights == "balanced"
          ? balanced_class_weights(train_split.targets, multi).to(run.device)
          : at::Tensor();

  // Resume: weights, AdamW moments, RNG, loader cursor and the selection so far.
  const fs::path ckpt_dir = checkpoint_dir(cfg);
  io::CheckpointStore store(ckpt_dir,
                            io::CheckpointStore::options_from(cfg.checkpoint, run.config_hash));
  const CheckpointParts parts{*net, *opt.optimizer, run.device, run.config_yaml};
  TrainState st;
  st.world_size = world;
  st.config_hash = run.config_hash;
  st.scaler.enabled = precision == Precision::kFp16;
  Selection sel;
  if (auto ck = store.resolve(cfg.checkpoint.resume)) {
    st = load_checkpoint(*ck, parts, *run.comm, cfg.train.seed);
    st.scaler.enabled = precision == Precision::kFp16;
    loader_restore(loader, st.data.at("loader"));
    sel = Selection::from_json(st.data.value("selection", json()));
    for (const auto& change :
         resume_config_changes(util::read_file(ck->path / io::CheckpointLayout::kConfig), cfg))
      log::warn("config differs from the checkpoint, resume is not exact: {}", change);
    st.world_size = world;
    st.config_hash = run.config_hash;
  }

  // Rank 0's weights everywhere, then the gradient all-reduce buckets.
  {
    std::vector<at::Tensor> state;
    for (const auto& p : net->parameters()) state.push_back(p.data());
    for (const auto& b : net->buffers()) state.push_back(b);
    run.comm->broadcast_(state, 0);
  }
  dist::GradSync grad_sync(run.comm, net->parameters(), cfg.dist.bucket_mb);
  const std::vector<at::Tensor> params = optimizer_params(*opt.optimizer);

  MultiSink sinks;
  if (run.primary()) {
    sinks.add(std::make_shared<JsonlSink>(run.dir / "metrics.jsonl", st.step));
    if (cfg.log.tensorboard)
      sinks.add(std::make_shared<TensorBoardSink>(run.dir / "tensorboard", st.step));
  }
  auto save = [&] {
    st.data = {{"loader", loader_state(loader)}, {"selection", sel.to_json()}};
    return save_checkpoint(store, st, parts, *run.comm, (st.step - 1) / per_epoch + 1).string();
  };
  auto out_of_time = [&] {
    return options.max_minutes > 0 &&
           seconds_between(t_start, Clock::now()) >= 60 * options.max_minutes;
  };
  // Rank 0 scores the validation split at the end of an epoch and keeps the best weights.
  auto validate = [&](int64_t epoch) {
    if (!run.primary()) return;
    at::Tensor probs = predict_split(net, cfg, val, run.device, precision);
    std::vector<double> th;
    const auto scalars = score_split(probs, val, multi, &th);
    const double score = selection_score(f.select, scalars, multi);
    const bool best = sel.add(epoch, st.step, score, scalars_json(scalars));
    std::map<std::string, double> m;
    for (const auto& [k, v] : scalars) m["val/" + k] = v;
    m["val/score"] = score;
    sinks.write(st.step, m, wall_time_s());
    log::info("epoch {} (step {}): val {} {:.4f} | auroc_macro {:.4f} | f1_macro {:.4f}{}", epoch,
              st.step, f.select, score, scalars.at("auroc_macro"), scalars.at("f1_macro"),
              best ? " | best so far" : "");
    if (best) {
      const std::string name = fmt::format("best/epoch-{:04d}.safetensors", epoch);
      fs::create_directories(run.dir / "best");
      io::save_weights(run.dir / name, io::module_state_dict(*net),
                       {{"epoch", std::to_string(epoch)}});
      sel.best_file = name;
    }
  };

  install_stop_handlers();
  FinetuneSummary summary;
  summary.rank = rank;
  summary.start_step = st.step;
  summary.total_steps = total;
  log::info(
      "fine-tuning {} steps ({} per epoch, batch {} {} per rank x {} ranks, lr {:.3e}, "
      "precision {}) from step {}",
      total, per_epoch, f.batch_size, set.level == "eye" ? "images" : "patients", world, sched.lr,
      f.precision == "auto" ? (run.device.is_cuda() ? "bf16" : "fp32") : f.precision, st.step);
  int64_t window_rows = 0, last_ckpt = -1;
  double window_busy_s = 0;  // forward + backward + update, without waiting for data
  auto window_start = Clock::now();
  new_dir.keep();  // from here on the run directory holds a run worth keeping
  while (st.step < total) {
    auto b = loader.next();
    if (!b) b = loader.next();  // the end of an epoch: the next call starts the next one
    RETCLIP_CHECK(b.has_value(), "the fine-tuning loader produced no batch for a new epoch");
    const auto t_busy = Clock::now();
    const double lr = lr_at(sched, st.step, total);
    set_lr(*opt.optimizer, lr, opt.lr_scale);
    opt.optimizer->zero_grad(true);

    at::Tensor idx = torch::tensor(b->indices, torch::kLong);
    at::Tensor target =
        smooth_targets(train_split.targets.index_select(0, idx), f.label_smoothing, multi);
    at::Tensor left = b->left.to(run.device), right = b->right.to(run.device);
    if (f.mixup > 0 || f.cutmix > 0) {
      MixedBatch m =
          mix_batch(left, set.level == "patient" ? right : at::Tensor(), target.to(run.device),
                    f.mixup, f.cutmix, data::mix_seed(cfg.train.seed, 7717 + st.step));
      left = m.left;
      if (set.level == "patient") right = m.right;
      target = m.targets;
    }
    at::Tensor logits;
    {
      AutocastScope scope(precision, run.device);
      logits = net->forward(left, right, b->has_left.to(run.device), b->has_right.to(run.device),
                            right_eye_rows(train_split.items, b->indices));
    }
    at::Tensor loss = classification_loss(logits, target.to(run.device), multi, class_weight);
    grad_sync.arm(true);
    (st.scaler.factor() == 1.0 ? loss : loss * st.scaler.factor()).backward();
    grad_sync.finish();
    // The loss averaged over ranks, with whether any rank wants to stop.
    const bool stop_here = stop_requested() || out_of_time();
    at::Tensor red =
        torch::stack({loss.detach().to(torch::kDouble),
                      torch::tensor(stop_here ? 1.0 : 0.0, torch::kDouble).to(run.device)});
    run.comm->all_reduce_(red);
    red = red.cpu();
    const double mean_loss = red[0].item<double>() / world;
    const bool stop = red[1].item<double>() > 0;
    const StepUpdate u =
        optimizer_update(*opt.optimizer, params, mean_loss, f.clip_norm, st.scaler);
    StepResult r;
    r.grad_norm = u.grad_norm;
    r.skipped = u.skipped;
    st.count(r, cfg.train.max_skipped_steps);
    fault_point("RETCLIP_FAULT_KILL_AFTER_STEP", st.step);
    if (run.device.is_cuda()) torch::cuda::synchronize(run.device.index());
    window_busy_s += seconds_between(t_busy, Clock::now());
    window_rows += b->left.size(0) * world;

    if (st.step % cfg.log.interval == 0 || st.step == total) {
      const double secs = seconds_between(window_start, Clock::now());
      const double rate = secs > 0 ? window_rows / secs : 0;
      const double step_rate = window_busy_s > 0 ? window_rows / window_busy_s : 0;
      sinks.write(st.step,
                  {{"finetune/loss", mean_loss},
                   {"finetune/lr", lr},
                   {"finetune/grad_norm", u.grad_norm},
                   {"finetune/rows_per_s", rate},
                   {"finetune/step_rows_per_s", step_rate}},
                  wall_time_s());
      const char* unit = set.level == "eye" ? "images" : "patients";
      log::info(
          "step {}/{} (epoch {}) | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.1f} {}/s "
          "({:.1f} {}/s in the step)",
          st.step, total, (st.step - 1) / per_epoch + 1, mean_loss, lr, u.grad_norm, rate, unit,
          step_rate, unit);
      window_rows = 0;
      window_busy_s = 0;
      window_start = Clock::now();
    }
    const bool epoch_end = st.step % per_epoch == 0 || st.step == total;
    if (epoch_end) validate((st.step - 1) / per_epoch + 1);
    if (stop || epoch_end || st.step % cfg.checkpoint.every_steps == 0) {
      summary.checkpoint = save();
      last_ckpt = st.step;
    }
    if (stop) {
      summary.interrupted = true;
      log::info("stop requested at step {}: checkpoint written; resume with checkpoint.resume=auto",
                st.step);
      break;
    }
  }
  if (!summary.interrupted && last_ckpt != st.step && st.step > summary.start_step)
    summary.checkpoint = save();
  summary.end_step = st.step;
  summary.best_epoch = sel.best_epoch;
  summary.best_score = sel.best_score;
  sinks.flush();
  if (summary.interrupted || !run.primary()) {
    run.comm->barrier();
    return summary;
  }

  // ---- the end: the chosen epoch's weights score the test split once, then export ----
  RETCLIP_CHECK(!sel.best_file.empty(), "fine-tuning finished without a validated epoch");
  io::apply_state_dict(*net, io::load_weights(run.dir / sel.best_file), /*strict=*/true);
  std::vector<double> thresholds;
  const at::Tensor val_probs = predict_split(net, cfg, val, run.device, precision);
  const auto val_scalars = score_split(val_probs, val, multi, &thresholds);
  json test_json = nullptr;
  if (test.size() > 0) {
    const at::Tensor probs = predict_split(net, cfg, test, run.device, precision);
    std::vector<double> th = thresholds;
    test_json = multi
                    ? eval::to_json(eval::multi_label_metrics(probs, test.targets, th), set.classes)
                    : eval::to_json(eval::single_label_metrics(probs, test.labels), set.classes);
    test_json["score"] =
        num(selection_score(f.select, score_split(probs, test, multi, &th), multi));
    util::write_file_atomic(run.dir / "test_predictions.csv",
                            predictions_csv(test, probs, set.classes));
  } else {
    log::warn(
        "{} has no test split: nothing scored after selection. HINT: set "
        "finetune.test_fraction or add a test split",
        f.data);
  }
  const std::string formula = f.select != "retfound" ? f.select
                              : multi                ? "(f1_macro + auroc_macro) / 2"
                                                     : "(f1_macro + auroc_macro + kappa) / 3";
  json results = {
      {"protocol", "finetune"},
      {"retclip_version", kVersion},
      {"task", multi ? "multi-label" : "single-label"},
      {"level", set.level},
      {"feature", f.feature},
      {"classes", set.classes},
      {"data", f.data},
      {"init",
       {{"kind", init_kind},
        {"path", init_kind == "clip" ? cfg.model.init.vision : f.init},
        {"head", f.head_init},
        {"prompts", f.head_init == "zeroshot" ? json(f.prompts) : json(nullptr)}}},
      {"recipe", recipe_json(f, sched.lr, sched.warmup_steps, global_batch)},
      {"steps", st.step},
      {"steps_per_epoch", per_epoch},
      {"world_size", world},
      {"selection",
       {{"criterion", f.select},
        {"formula", formula},
        {"split", "val"},
        {"chosen_epoch", sel.best_epoch},
        {"chosen_step", sel.best_step},
        {"score", num(sel.best_score)},
        {"reason", fmt::format("epoch {} has the highest validation {} ({}) of the {} epochs "
                               "scored (ties keep the earliest)",
                               sel.best_epoch, f.select, formula, sel.history.size())},
        {"history", sel.history}}},
      {"val", scalars_json(val_scalars)},
      {"thresholds", multi ? json(thresholds) : json(nullptr)},
      {"test", test_json},
      {"test_scored_once", test.size() > 0},
      {"splits",
       {{"train", {{"n", train_split.size()}, {"hash", set.split_hash("train")}}},
        {"val", {{"n", val.size()}, {"hash", set.split_hash("val")}}},
        {"test", {{"n", test.size()}, {"hash", set.split_hash("test")}}},
        {"val_drawn", set.val_drawn},
        {"test_drawn", set.test_drawn},
        {"split_seed", set.split_seed}}},
      {"config_hash", run.config_hash}};
  const fs::path export_dir = run.dir / "classifier";
  json side = {{"classes", set.classes},
               {"task", multi ? "multi-label" : "single-label"},
               {"decision", multi ? "probability >= thresholds[c] (tuned for F1 on val)"
                                  : "argmax of the probabilities"},
               {"thresholds", multi ? json(thresholds) : json(nullptr)},
               {"preprocessing",
                {{"preprocess", cfg.data.preprocess},
                 {"fundus_crop", cfg.data.preprocess == "fundus_crop"},
                 {"resize", cfg.data.preprocess == "fundus_crop"
                                ? "field of view, pad to square, INTER_AREA"
                                : "whole photo to a square, INTER_AREA (bicubic when enlarging)"},
                 {"image_size", cfg.data.image_size},
                 {"mean", cfg.data.mean},
                 {"std", cfg.data.std}}},
               {"init", results.at("init")},
               {"selection", results.at("selection")},
               {"test", test_json},
               {"config", run.config_yaml}};
  save_classifier(export_dir, net, side);
  results["export"] = export_dir.string();
  util::write_file_atomic(run.dir / "results.json", results.dump(2));
  std::string test_line = "not scored (no test split)";
  if (!test_json.is_null() && test_json.contains("auroc_macro") &&
      test_json.at("auroc_macro").is_number())
    test_line = fmt::format("macro AUROC {:.4f}", test_json.at("auroc_macro").get<double>());
  log::info("chosen: epoch {} (val {} {:.4f}); test {}; classifier exported to {}", sel.best_epoch,
            f.select, sel.best_score, test_line, export_dir.string());
  summary.results = results;
  summary.export_dir = export_dir.string();
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
