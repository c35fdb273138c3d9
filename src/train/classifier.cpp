// The fine-tuned classifier (see classifier.hpp): module, freeze modes, losses,
// mixup / cutmix, export and `retclip predict`.
#include "retclip/train/classifier.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "retclip/data/loader.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/eval/labels.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"

namespace retclip::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- the module --------------------------------------------------------------------

int64_t ClassifierOptions::feature_dim() const {
  const bool pre = feature == "pre_proj";
  if (level == "patient") return pre ? 2 * vision.width() : vision.embed_dim();
  return pre ? vision.width() : vision.embed_dim();
}

ClassifierImpl::ClassifierImpl(const ClassifierOptions& o) : options_(o) {
  RETCLIP_CHECK_USAGE(o.level == "eye" || o.level == "patient", "finetune.level '", o.level,
                      "' is not eye or patient");
  RETCLIP_CHECK_USAGE(o.feature == "pre_proj" || o.feature == "post_proj", "finetune.feature '",
                      o.feature, "' is not pre_proj or post_proj");
  RETCLIP_CHECK_USAGE(o.classes >= 2 || (o.multi_label && o.classes >= 1),
                      "a classifier needs at least 2 classes (or 1 label) but got ", o.classes,
                      ". HINT: check finetune.classes and the label column");
  RETCLIP_CHECK_USAGE(!o.per_eye || (o.level == "eye" && o.feature == "post_proj"),
                      "per-eye heads score eye-level post_proj features but the classifier is ",
                      o.level, " level, ", o.feature,
                      ". HINT: finetune.level=eye and finetune.feature=post_proj");
  visual = register_module("visual", model::VisionTransformer(o.vision));
  const int64_t e = o.vision.embed_dim();
  auto mapping = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  if (o.level == "patient" && o.feature == "post_proj")
    global_feature_mapping = register_module("global_feature_mapping", mapping(2 * e, e));
  if (o.per_eye) {
    left_feature_mapping = register_module("left_feature_mapping", mapping(e, e));
    right_feature_mapping = register_module("right_feature_mapping", mapping(e, e));
  }
  head = register_module("head",
                         torch::nn::Linear(o.feature_dim(), o.per_eye ? 2 * o.classes : o.classes));
  // pre_proj heads never use visual.proj: kept (the export has the whole tower) but not
  // trained, so no optimizer or gradient all-reduce ever sees a parameter without gradient.
  if (o.feature == "pre_proj") visual->proj.set_requires_grad(false);
  // RETFound / timm: trunc_normal_(head.weight, std=2e-5), zero bias, so the first
  // logits are near 0 whatever the tower.
  torch::NoGradGuard ng;
  head->weight.normal_(0.0, 2e-5);
  head->bias.zero_();
}

namespace {

void check_is_right(const at::Tensor& is_right, const at::Tensor& images) {
  TORCH_CHECK(is_right.defined() && is_right.dim() == 1 && is_right.size(0) == images.size(0),
              "a per-eye classifier expected is_right [", images.size(0), "] but got ",
              is_right.defined() ? is_right.sizes() : at::IntArrayRef{});
}

}  // namespace

at::Tensor ClassifierImpl::features(const at::Tensor& left, const at::Tensor& right,
                                    const at::Tensor& has_left, const at::Tensor& has_right,
                                    const at::Tensor& is_right) {
  const bool pre = options_.feature == "pre_proj";
  auto vit = [&](const at::Tensor& x) { return pre ? visual->forward_cls(x) : visual->forward(x); };
  // Zero-shot's l2: x / max(|x|, 1e-12).
  auto norm = [&](const at::Tensor& x) {
    return options_.normalize ? x / x.norm(2, {-1}, true).clamp_min(1e-12) : x;
  };
  if (options_.level == "eye") {
    at::Tensor f = vit(left);
    if (!options_.per_eye) return norm(f);
    check_is_right(is_right, left);
    at::Tensor m = is_right.to(f.device(), torch::kBool).unsqueeze(1);
    return norm(
        torch::where(m, right_feature_mapping->forward(f), left_feature_mapping->forward(f)));
  }
  const int64_t b = left.size(0);
  at::Tensor both = vit(torch::cat({left, right}, 0));  // one pass over 2B images
  at::Tensor fl = both.narrow(0, 0, b), fr = both.narrow(0, b, b);
  at::Tensor l = torch::where(has_left.unsqueeze(1), fl, fr);
  at::Tensor r = torch::where(has_right.unsqueeze(1), fr, fl);
  at::Tensor cat = torch::cat({l, r}, 1);
  return norm(pre ? cat : global_feature_mapping->forward(cat));
}

at::Tensor ClassifierImpl::forward(const at::Tensor& left, const at::Tensor& right,
                                   const at::Tensor& has_left, const at::Tensor& has_right,
                                   const at::Tensor& is_right) {
  at::Tensor z = head->forward(features(left, right, has_left, has_right, is_right));
  if (!options_.per_eye) return z;
  const int64_t c = options_.classes;
  at::Tensor m = is_right.to(z.device(), torch::kBool).unsqueeze(1);
  return torch::where(m, z.narrow(1, c, c), z.narrow(1, 0, c));
}

at::Tensor right_eye_rows(const std::vector<eval::LabelledItem>& items,
                          const std::vector<int64_t>& indices) {
  std::vector<uint8_t> r;
  r.reserve(indices.size());
  for (int64_t i : indices) r.push_back(items[static_cast<size_t>(i)].eye == eval::Eye::kRight);
  return torch::tensor(r, torch::kUInt8).to(torch::kBool);
}

at::Tensor ClassifierImpl::probabilities(const at::Tensor& logits) const {
  at::Tensor z = logits.to(torch::kFloat);
  return options_.multi_label ? torch::sigmoid(z) : torch::softmax(z, 1);
}

void apply_classifier_freeze(Classifier& net, const std::string& freeze) {
  if (freeze == "none") return;
  if (freeze == "head-only") {
    for (auto& p : net->named_parameters())
      if (p.key().rfind("head.", 0) != 0) p.value().set_requires_grad(false);
    return;
  }
  int64_t n = -1;
  if (freeze.rfind("first-", 0) == 0 && freeze.size() > 13)
    n = std::atoll(freeze.substr(6, freeze.size() - 13).c_str());
  RETCLIP_CHECK_USAGE(
      n >= 1 && freeze.size() > 13 && freeze.compare(freeze.size() - 7, 7, "-blocks") == 0,
      "finetune.freeze: expected none, head-only or first-N-blocks but got '", freeze,
      "'. HINT: finetune.freeze=first-4-blocks");
  const int64_t layers = net->options().vision.layers();
  RETCLIP_CHECK_USAGE(n <= layers, "finetune.freeze=", freeze, " but the ViT has ", layers,
                      " blocks. HINT: finetune.freeze=first-", layers, "-blocks at most");
  freeze_vision_blocks(*net, n);
}

// ---- losses and mixing -------------------------------------------------------------

at::Tensor smooth_targets(const at::Tensor& t, double eps, bool multi_label) {
  if (eps <= 0) return t;
  if (multi_label) return t * (1 - eps) + eps / 2;
  return t * (1 - eps) + eps / static_cast<double>(t.size(1));
}

at::Tensor classification_loss(const at::Tensor& logits, const at::Tensor& targets,
                               bool multi_label, const at::Tensor& class_weight) {
  RETCLIP_CHECK(logits.sizes() == targets.sizes(),
                "expected logits and targets of one shape but got ", logits.sizes(), " and ",
                targets.sizes());
  at::Tensor z = logits.to(torch::kFloat), t = targets.to(z.options());
  if (multi_label) {
    at::Tensor pw = class_weight.defined() ? class_weight.to(z.options()) : at::Tensor();
    return torch::binary_cross_entropy_with_logits(z, t, {}, pw);
  }
  at::Tensor nll = -(t * torch::log_softmax(z, 1));
  if (class_weight.defined()) nll = nll * class_weight.to(z.options()).unsqueeze(0);
  return nll.sum(1).mean();
}

at::Tensor balanced_class_weights(const at::Tensor& targets, bool multi_label) {
  at::Tensor t = targets.to(torch::kDouble);
  const double n = static_cast<double>(t.size(0));
  at::Tensor pos = t.sum(0);
  if (multi_label)
    return torch::where(pos > 0, (n - pos) / pos.clamp_min(1), torch::ones_like(pos))
        .to(torch::kFloat);
  const double present = (pos > 0).sum().item<double>();
  return torch::where(pos > 0, n / (present * pos.clamp_min(1)), torch::ones_like(pos))
      .to(torch::kFloat);
}

namespace {

// Beta(a, a) from two gamma draws (std has no beta distribution).
double beta_draw(std::mt19937_64& rng, double a) {
  std::gamma_distribution<double> g(a, 1.0);
  const double x = g(rng), y = g(rng);
  return x + y > 0 ? x / (x + y) : 0.5;
}

}  // namespace

MixedBatch mix_batch(const at::Tensor& left, const at::Tensor& right, const at::Tensor& targets,
                     double mixup_alpha, double cutmix_alpha, uint64_t seed) {
  MixedBatch m{left, right, targets, 1.0, false};
  if (mixup_alpha <= 0 && cutmix_alpha <= 0) return m;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  m.cutmix = cutmix_alpha > 0 && (mixup_alpha <= 0 || u(rng) < 0.5);
  double lam = beta_draw(rng, m.cutmix ? cutmix_alpha : mixup_alpha);
  if (!m.cutmix) {
    auto mix = [&](const at::Tensor& x) {
      return x.defined() ? x * lam + x.flip(0) * (1 - lam) : x;
    };
    m.left = mix(left);
    m.right = mix(right);
  } else {
    // timm rand_bbox: a box of side ratio sqrt(1 - lam) around a uniform centre, clipped.
    const int64_t h = left.size(2), w = left.size(3);
    const double cut = std::sqrt(1 - lam);
    const int64_t ch = static_cast<int64_t>(h * cut), cw = static_cast<int64_t>(w * cut);
    const int64_t cy = static_cast<int64_t>(u(rng) * h), cx = static_cast<int64_t>(u(rng) * w);
    const int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, h),
                  y1 = std::clamp<int64_t>(cy + ch / 2, 0, h);
    const int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, w),
                  x1 = std::clamp<int64_t>(cx + cw / 2, 0, w);
    auto paste = [&](const at::Tensor& x) {
      if (!x.defined()) return x;
      at::Tensor out = x.clone();
      using torch::indexing::Slice;
      out.index_put_({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)},
                     x.flip(0).index({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)}));
      return out;
    };
    m.left = paste(left);
    m.right = paste(right);
    lam = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  }
  m.lam = lam;
  m.targets = targets * lam + targets.flip(0) * (1 - lam);
  return m;
}

// ---- export and prediction ---------------------------------------------------------

namespace {
constexpr const char* kWeightsFile = "classifier.safetensors";
constexpr const char* kFormat = "retclip-classifier";
}  // namespace

void save_classifier(const fs::path& dir, Classifier& net, json side) {
  fs::create_directories(dir);
  const auto& o = net->options();
  const auto& v = o.vision;
  side["format"] = kFormat;
  side["file"] = kWeightsFile;
  side["model"] = {{"image_size", v.image_size()}, {"patch_size", v.patch_size()},
                   {"width", v.width()},           {"layers", v.layers()},
                   {"heads", v.num_heads()},       {"mlp_ratio", v.mlp_ratio()},
                   {"embed_dim", v.embed_dim()},   {"classes", o.classes},
                   {"multi_label", o.multi_label}, {"level", o.level},
                   {"feature", o.feature},         {"normalize", o.normalize},
                   {"per_eye", o.per_eye},         {"activation", "quick_gelu"}};
  io::save_weights(dir / kWeightsFile, io::module_state_dict(*net), {{"format", kFormat}});
  util::write_file_atomic(dir / "retclip.json", side.dump(2));
}

LoadedClassifier load_classifier(const fs::path& dir) {
  const fs::path side_path = dir / "retclip.json";
  RETCLIP_CHECK_USAGE(fs::exists(side_path), dir.string(),
                      " has no retclip.json. HINT: --weights takes the classifier directory "
                      "that retclip finetune writes (<log.dir>/classifier)");
  LoadedClassifier out;
  out.sidecar = json::parse(util::read_file(side_path));
  RETCLIP_CHECK_USAGE(out.sidecar.value("format", "") == kFormat, side_path.string(),
                      " is not a fine-tuned classifier (format '", out.sidecar.value("format", ""),
                      "'). HINT: retclip predict takes <log.dir>/classifier of retclip finetune");
  try {
    const auto& m = out.sidecar.at("model");
    ClassifierOptions o;
    o.vision = model::VisionTransformerOptions()
                   .image_size(m.at("image_size").get<int64_t>())
                   .patch_size(m.at("patch_size").get<int64_t>())
                   .width(m.at("width").get<int64_t>())
                   .layers(m.at("layers").get<int64_t>())
                   .heads(m.at("heads").get<int64_t>())
                   .mlp_ratio(m.at("mlp_ratio").get<double>())
                   .embed_dim(m.at("embed_dim").get<int64_t>());
    o.classes = m.at("classes").get<int64_t>();
    o.multi_label = m.at("multi_label").get<bool>();
    o.level = m.at("level").get<std::string>();
    o.feature = m.at("feature").get<std::string>();
    o.normalize = m.value("normalize", false);  // absent in exports without zero-shot heads
    o.per_eye = m.value("per_eye", false);
    out.classes = out.sidecar.at("classes").get<std::vector<std::string>>();
    const auto& pre = out.sidecar.at("preprocessing");
    out.image_size = pre.at("image_size").get<int64_t>();
    out.preprocess = pre.value("preprocess", "fundus_crop");  // absent in older exports
    out.mean = pre.at("mean").get<std::array<double, 3>>();
    out.std = pre.at("std").get<std::array<double, 3>>();
    out.net = Classifier(o);
  } catch (const json::exception& e) {
    throw UsageError(str_cat(side_path.string(), ": incomplete classifier sidecar (", e.what(),
                             "). HINT: re-export with retclip finetune"));
  }
  io::apply_state_dict(*out.net, io::load_weights(dir / kWeightsFile), /*strict=*/true);
  out.net->eval();
  return out;
}

int64_t predict_manifest(const PredictOptions& o) {
  LoadedClassifier c = load_classifier(o.weights);
  const std::string level = c.net->options().level;
  auto samples =
      data::read_samples(o.manifest, "auto", o.split, data::BadSamplePolicy::kFail, nullptr);
  RETCLIP_CHECK_USAGE(!samples.empty(), "no rows in ", o.manifest,
                      o.split.empty() ? "" : " of split " + o.split, ". HINT: check --manifest");
  std::vector<eval::LabelledItem> items;
  for (const auto& s : samples) {
    eval::LabelledItem it;
    it.patient_id = s.patient_id;
    it.origin = s.origin;
    if (level == "patient") {
      it.id = s.patient_id;
      it.eye = eval::Eye::kBoth;
      it.left = s.left;
      it.right = s.right;
      items.push_back(it);
      continue;
    }
    for (eval::Eye e : {eval::Eye::kLeft, eval::Eye::kRight}) {
      const data::ImageRef& ref = e == eval::Eye::kLeft ? s.left : s.right;
      if (!ref.present()) continue;
      eval::LabelledItem one = it;
      one.id = s.patient_id + ":" + eval::eye_name(e);
      one.eye = e;
      (e == eval::Eye::kLeft ? one.left : one.right) = ref;
      items.push_back(one);
    }
  }
  data::LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.image_size = c.image_size;
  lo.context_length = 4;
  lo.workers = o.workers;
  lo.prefetch = std::max<int64_t>(2, 2 * o.workers);
  lo.mean = c.mean;
  lo.std = c.std;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.policy = data::BadSamplePolicy::kFail;
  const at::Device device = eval::pick_device(o.device);
  data::Loader loader(
      eval::make_item_source(items, level, c.image_size, 4, data::kDefaultMaxImagePixels,
                             data::parse_preprocess(c.preprocess)),
      nullptr, lo);
  c.net->to(device);
  torch::NoGradGuard ng;
  std::vector<at::Tensor> probs(items.size()), inputs_l(items.size()), inputs_r(items.size()),
      has_l(items.size()), has_r(items.size());
  util::Progress bar("predict", static_cast<int64_t>(items.size()),
                     level == "eye" ? "images" : "patients");
  while (auto b = loader.next()) {
    at::Tensor l = b->left.to(device), r = b->right.to(device);
    at::Tensor p = c.net->probabilities(c.net->forward(
        l, r, b->has_left.to(device), b->has_right.to(device), right_eye_rows(items, b->indices)));
    p = p.to(torch::kCPU);
    // The last batch is padded with repeats of earlier items; only first sightings count.
    int64_t fresh = 0;
    for (size_t j = 0; j < b->indices.size(); ++j) {
      const int64_t idx = b->indices[j];
      if (probs[idx].defined()) continue;
      ++fresh;
      probs[idx] = p[static_cast<int64_t>(j)];
      if (!o.save_inputs.empty()) {
        inputs_l[idx] = b->left[static_cast<int64_t>(j)];
        inputs_r[idx] = b->right[static_cast<int64_t>(j)];
        has_l[idx] = b->has_left[static_cast<int64_t>(j)];
        has_r[idx] = b->has_right[static_cast<int64_t>(j)];
      }
    }
    bar.advance(fresh);
  }
  bar.finish();
  std::string csv = "id,patient_id,eye";
  for (const auto& name : c.classes) csv += "," + name;
  csv += "\n";
  for (size_t i = 0; i < items.size(); ++i) {
    csv += fmt::format("{},{},{}", items[i].id, items[i].patient_id, eval::eye_name(items[i].eye));
    auto a = probs[i].accessor<float, 1>();
    for (int64_t k = 0; k < a.size(0); ++k) csv += fmt::format(",{:.9g}", a[k]);
    csv += "\n";
  }
  util::write_file_atomic(o.out, csv);
  if (!o.save_inputs.empty()) {
    io::StateDict sd{{"probabilities", torch::stack(probs)}, {"left", torch::stack(inputs_l)}};
    if (level == "patient") {
      sd.emplace_back("right", torch::stack(inputs_r));
      sd.emplace_back("has_left", torch::stack(has_l).to(torch::kUInt8));
      sd.emplace_back("has_right", torch::stack(has_r).to(torch::kUInt8));
    }
    std::vector<std::string> ids;
    for (const auto& it : items) ids.push_back(it.id);
    io::save_weights(o.save_inputs, sd, {{"ids", json(ids).dump()}});
  }
  log::info("predict: {} {} from {} -> {}", items.size(), level == "eye" ? "images" : "patients",
            o.manifest, o.out);
  return static_cast<int64_t>(items.size());
}

}  // namespace retclip::train
