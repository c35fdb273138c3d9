// Feature extraction: a SampleSource over labelled items feeds data::Loader (worker
// threads decode while the calling thread runs the model), then per-level heads.
#include "retclip/eval/features.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>

#include "retclip/data/loader.hpp"
#include "retclip/io/checkpoint_store.hpp"
#include "retclip/io/export.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"

namespace retclip::eval {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Manifest decoding of the items, with a fixed token row of zeros so that the loader needs
// no tokenizer (features use the image tower only).
class ItemSource : public data::SampleSource {
 public:
  ItemSource(std::vector<data::Sample> samples, int64_t image_size, int64_t context_length,
             int64_t max_pixels, data::Preprocess preprocess)
      : inner_(data::make_manifest_source(std::move(samples), image_size, max_pixels, preprocess)),
        tokens_(static_cast<size_t>(context_length), 0) {}
  int64_t size() const override { return inner_->size(); }
  data::DecodedSample load(int64_t i) const override {
    data::DecodedSample s = inner_->load(i);
    s.tokens = tokens_;
    return s;
  }
  std::string describe(int64_t i) const override { return inner_->describe(i); }
  int64_t image_size() const override { return inner_->image_size(); }

 private:
  std::shared_ptr<data::SampleSource> inner_;
  std::vector<int64_t> tokens_;
};

int64_t vocab_of(const io::StateDict& sd) {
  for (const auto& [k, v] : sd)
    if (k == "bert.embeddings.word_embeddings.weight") return v.size(0);
  return 0;
}

}  // namespace

std::shared_ptr<data::SampleSource> make_item_source(const std::vector<data::LabelledItem>& items,
                                                     config::Level level, int64_t image_size,
                                                     int64_t context_length, int64_t max_pixels,
                                                     data::Preprocess preprocess) {
  RETCLIP_CHECK(level != config::Level::kAuto, "make_item_source: level auto is not resolved");
  const bool eye_level = level == config::Level::kEye;
  std::vector<data::Sample> samples;
  for (const auto& it : items) {
    const bool eye_item = it.eye != data::Eye::kBoth;
    RETCLIP_CHECK_USAGE(eye_item == eye_level, it.origin, " is a ",
                        eye_item ? "single-eye" : "patient", " item but it was asked for at ",
                        config::name(level), " level. HINT: --level ", eye_item ? "eye" : "patient");
    data::Sample s;
    s.patient_id = it.id;
    s.origin = it.origin;
    if (eye_level)
      s.left = it.image();  // one image per sample, in the left slot
    else
      s.left = it.left, s.right = it.right;
    samples.push_back(std::move(s));
  }
  return std::make_shared<ItemSource>(std::move(samples), image_size, context_length, max_pixels,
                                      preprocess);
}

at::Device pick_device(const std::string& name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "cuda" || name == "auto") {
    if (torch::cuda::is_available()) return at::Device(at::kCUDA, 0);
    RETCLIP_CHECK_USAGE(name == "auto",
                        "--device cuda but no CUDA device is available. HINT: "
                        "--device cpu or auto");
    return at::Device(at::kCPU);
  }
  throw UsageError(str_cat("--device '", name, "' is not auto, cpu or cuda"));
}

data::LoaderOptions inference_loader_options(const config::DataConfig& dc, int64_t batch_size,
                                             int64_t workers, at::Device device,
                                             data::BadSamplePolicy policy) {
  data::LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.image_size = dc.image_size;
  lo.context_length = dc.context_length;
  lo.workers = workers;
  lo.prefetch = std::max<int64_t>(2, 2 * workers);
  lo.mean = dc.mean;
  lo.std = dc.std;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.policy = policy;
  lo.pin_memory = device.is_cuda();
  return lo;
}

namespace {

// An image tower's weights file (timm / RETFound / DINOv2 .pth or .safetensors, CLIP):
// the tower the file holds (model.vision.preset=checkpoint), a new projection to width,
// and a minimal text tower that is never used.
Encoder load_image_tower_file(const fs::path& file) {
  Encoder enc;
  enc.source = file.string();
  enc.cfg.model.vision.preset = config::kVisionFromCheckpoint;
  enc.cfg.model.init.vision = file.string();
  enc.cfg.model.text.preset = "bert-micro";
  io::resolve_pretrained_presets(enc.cfg.model);
  const auto& v = enc.cfg.model.vision;
  enc.cfg.data.image_size = v.image_size;
  if (!v.norm_pre) {  // timm's plain ViTs (RETFound, DINOv2) take ImageNet's statistics
    enc.cfg.data.mean = {0.485, 0.456, 0.406};
    enc.cfg.data.std = {0.229, 0.224, 0.225};
  }
  enc.net = model::RetClip(model::retclip_options(enc.cfg.model, 8));
  io::load_pretrained(*enc.net, file, io::Pretrained::kVision, "--weights",
                      v.image_size / v.patch_size);
  enc.has_text = false;
  enc.net->eval();
  return enc;
}

}  // namespace

Encoder load_encoder(const fs::path& dir) {
  if (fs::is_regular_file(dir)) return load_image_tower_file(dir);
  Encoder enc;
  enc.source = dir.string();
  io::StateDict sd;
  if (fs::exists(dir / "retclip.json")) {
    json side = json::parse(util::read_file(dir / "retclip.json"));
    RETCLIP_CHECK_USAGE(side.value("format", "") == "retclip-export",
                        (dir / "retclip.json").string(),
                        " is not a retclip export sidecar. HINT: pass a directory written by "
                        "retclip export");
    enc.cfg =
        config::load_string(side.at("config").get<std::string>(), (dir / "retclip.json").string());
    const auto& files = side.at("files");
    const std::string part = files.contains("full") ? "full" : "vision";
    RETCLIP_CHECK_USAGE(files.contains(part), dir.string(),
                        " has neither full.safetensors nor vision.safetensors. HINT: export "
                        "with --parts vision (or full)");
    sd = io::load_weights(dir / files.at(part).get<std::string>());
    const std::string tok = side.value("tokenizer", json::object()).value("file", "");
    if (!tok.empty()) enc.tokenizer_path = (dir / tok).string();
  } else {
    // A checkpoint, checkpoints or run directory: its newest complete checkpoint.
    const io::CheckpointContents ck = io::open_checkpoint(dir.string());
    enc.source = ck.dir.string();
    enc.cfg =
        config::load_string(ck.config_yaml, (ck.dir / io::CheckpointLayout::kConfig).string());
    sd = io::load_weights(ck.weights);
    // The recorded tokenizer, or the copy a run from shards keeps in its run directory.
    enc.tokenizer_path = io::checkpoint_tokenizer(enc.cfg, ck.dir).string();
  }
  int64_t vocab = vocab_of(sd);
  if (vocab == 0) vocab = enc.cfg.model.text.vocab_size > 0 ? enc.cfg.model.text.vocab_size : 8;
  enc.net = model::RetClip(model::retclip_options(enc.cfg.model, vocab));
  // A vision-only export has no text tower: only the image side must be complete.
  enc.has_text = vocab_of(sd) > 0;
  io::apply_state_dict(*enc.net, sd, /*strict=*/enc.has_text);
  enc.net->eval();
  return enc;
}

Encoder random_encoder(const Encoder& enc, uint64_t seed) {
  Encoder r;
  r.cfg = enc.cfg;
  r.source = "random-init(seed " + std::to_string(seed) + ")";
  torch::manual_seed(seed);
  r.net = model::RetClip(enc.net->options());
  r.net->eval();
  return r;
}

Features extract_features(Encoder& enc, const std::vector<data::LabelledItem>& items,
                          const FeatureOptions& o) {
  RETCLIP_CHECK_USAGE(o.level != config::Level::kAuto,
                      "features are extracted at eye or patient level, not auto. HINT: --level eye");
  const bool eye_level = o.level == config::Level::kEye;
  const bool pre_proj = o.feature == config::Feature::kPreProj;
  RETCLIP_CHECK_USAGE(!(o.mapping && (!eye_level || pre_proj)),
                      "--mapping applies the left/right feature mappings to eye-level "
                      "post_proj features only. HINT: --level eye --feature post_proj");
  RETCLIP_CHECK_USAGE(!items.empty(), "no items to extract features from");
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& it : items)
    RETCLIP_CHECK_USAGE(!(o.mapping && it.eye == data::Eye::kUnknown), it.origin,
                        ": the eye's laterality is unknown, so no left/right mapping applies. "
                        "HINT: drop --mapping");
  const auto& dc = enc.cfg.data;
  const at::Device device = pick_device(o.device);
  const data::LoaderOptions lo =
      inference_loader_options(dc, o.batch_size, o.workers, device, o.policy);
  auto src = make_item_source(items, o.level, dc.image_size, dc.context_length, dc.max_image_pixels,
                              dc.preprocess);
  data::Loader loader(src, nullptr, lo);
  enc.net->to(device);
  enc.net->eval();
  torch::NoGradGuard ng;
  auto& net = *enc.net;
  std::vector<at::Tensor> rows(items.size());
  util::Progress bar("features", static_cast<int64_t>(items.size()),
                     eye_level ? "images" : "patients");
  while (auto b = loader.next()) {
    at::Tensor left = b->left.to(device, b->left.scalar_type(), /*non_blocking=*/true);
    at::Tensor feats;
    auto vit = [&](const at::Tensor& x) {
      return pre_proj ? net.visual->forward_pooled(x) : net.visual->forward(x);
    };
    if (eye_level) {
      feats = vit(left);
      if (o.mapping) {
        at::Tensor l = net.left_feature_mapping->forward(feats);
        at::Tensor r = net.right_feature_mapping->forward(feats);
        std::vector<int64_t> is_right;
        for (int64_t idx : b->indices) is_right.push_back(items[idx].eye == data::Eye::kRight);
        at::Tensor m = torch::tensor(is_right, torch::kBool).to(device).unsqueeze(1);
        feats = torch::where(m, r, l);
      }
    } else {
      at::Tensor right = b->right.to(device, b->right.scalar_type(), /*non_blocking=*/true);
      at::Tensor hl = b->has_left.to(device), hr = b->has_right.to(device);
      at::Tensor fl = vit(left), fr = vit(right);
      // A missing eye takes the present eye's feature (as the training forward does).
      at::Tensor l = torch::where(hl.unsqueeze(1), fl, fr),
                 r = torch::where(hr.unsqueeze(1), fr, fl);
      feats = pre_proj ? torch::cat({l, r}, 1)
                                      : net.global_feature_mapping->forward(torch::cat({l, r}, 1));
    }
    feats = feats.to(torch::kCPU, torch::kFloat);
    for (size_t j = 0; j < b->indices.size(); ++j) {
      const int64_t idx = b->indices[j];
      if (!rows[idx].defined()) {
        rows[idx] = feats[static_cast<int64_t>(j)];
        bar.advance(1);
      }
    }
  }
  bar.finish();
  Features f;
  f.level = config::name(o.level);
  f.feature = config::name(o.feature);
  f.mapping = o.mapping;
  std::vector<at::Tensor> kept;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!rows[i].defined()) {
      f.missing.push_back(items[i].id);  // a bad sample the loader skipped
      continue;
    }
    kept.push_back(rows[i]);
    f.ids.push_back(items[i].id);
  }
  RETCLIP_CHECK_USAGE(!kept.empty(), "no item could be loaded for features");
  if (!f.missing.empty())
    log::warn("features: {} item(s) could not be loaded and were left out (first: {})",
              f.missing.size(), f.missing[0]);
  f.x = torch::stack(kept);
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return f;
}

void save_features(const fs::path& path, const Features& f, const std::string& source) {
  io::save_weights(path, {{"features", f.x}},
                   {{"ids", json(f.ids).dump()},
                    {"level", f.level},
                    {"feature", f.feature},
                    {"mapping", f.mapping ? "true" : "false"},
                    {"source", source}});
}

Features load_features(const fs::path& path) {
  std::map<std::string, std::string> meta;
  io::StateDict sd = io::load_weights(path, &meta);
  const at::Tensor* x = io::find_tensor(sd, "features");
  RETCLIP_CHECK_USAGE(x && meta.count("ids"), path.string(),
                      " is not a retclip features file (no 'features' tensor or 'ids'). HINT: "
                      "write it with retclip features");
  Features f;
  f.x = *x;
  f.ids = json::parse(meta.at("ids")).get<std::vector<std::string>>();
  f.level = meta.count("level") ? meta.at("level") : "";
  f.feature = meta.count("feature") ? meta.at("feature") : "";
  f.mapping = meta.count("mapping") && meta.at("mapping") == "true";
  RETCLIP_CHECK_USAGE(static_cast<int64_t>(f.ids.size()) == f.x.size(0), path.string(), " has ",
                      f.x.size(0), " feature rows but ", f.ids.size(), " ids");
  return f;
}

}  // namespace retclip::eval
