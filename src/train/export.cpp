// retclip export / retclip embed.
#include "retclip/train/export.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "retclip/data/image.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/data/tokenizer.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/checkpoint.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"
#include "retclip/version.hpp"

namespace retclip::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path resolve_checkpoint_dir(const std::string& path) {
  fs::path p(path);
  RETCLIP_CHECK_USAGE(fs::exists(p), "checkpoint path ", path, " does not exist");
  if (fs::exists(p / CheckpointStore::kMarker)) {
    CheckpointCheck c = CheckpointStore::verify(p);
    RETCLIP_CHECK_USAGE(c.ok, "checkpoint ", path, " is not usable: ", c.reason);
    return p;
  }
  if (fs::exists(p / "checkpoints")) p /= "checkpoints";
  CheckpointStore store(p, {});
  auto latest = store.latest_complete();
  RETCLIP_CHECK_USAGE(latest.has_value(), "no complete checkpoint under ", p.string(),
                      ". HINT: pass a step-NNNNNNNN directory, a checkpoints directory or a run "
                      "directory");
  return latest->path;
}

namespace {

bool is_vision_key(const std::string& k) {
  return k.rfind("visual.", 0) == 0 || k.rfind("global_feature_mapping.", 0) == 0 ||
         k.rfind("left_feature_mapping.", 0) == 0 || k.rfind("right_feature_mapping.", 0) == 0;
}
bool is_text_key(const std::string& k) {
  return k.rfind("bert.", 0) == 0 || k.rfind("text_projection", 0) == 0;
}

json sidecar(const config::Config& cfg, const model::RetClipOptions& o, int64_t step,
             const std::string& tokenizer_file, const json& files) {
  const auto& v = o.vision();
  const auto& t = o.text();
  return json{
      {"format", "retclip-export"},
      {"version", 1},
      {"retclip_version", kVersion},
      {"git_hash", kGitHash},
      {"step", step},
      {"embed_dim", o.embed_dim()},
      {"files", files},
      {"vision",
       {{"preset", cfg.model.vision.preset}, {"image_size", v.image_size()},
        {"patch_size", v.patch_size()}, {"width", v.width()}, {"layers", v.layers()},
        {"heads", v.heads() > 0 ? v.heads() : v.width() / 64}, {"mlp_ratio", v.mlp_ratio()},
        {"activation", "quick_gelu"}}},
      {"text",
       {{"preset", cfg.model.text.preset}, {"vocab_size", t.vocab_size()}, {"hidden", t.hidden()},
        {"layers", t.layers()}, {"heads", t.heads()}, {"intermediate", t.intermediate()},
        {"max_position", t.max_position()}, {"layer_norm_eps", t.layer_norm_eps()},
        {"pad_id", t.pad_id()}, {"context_length", cfg.data.context_length},
        {"output", "hidden state of token 0 ([CLS])"}}},
      {"tokenizer",
       {{"type", cfg.data.tokenizer.type}, {"file", tokenizer_file},
        {"lowercase", cfg.data.tokenizer.lowercase},
        {"layout", "[CLS] tokens [SEP] [PAD]..., truncated to context_length"}}},
      {"preprocessing",
       {{"fundus_crop", "crop to the circular field of view, pad to square with black"},
        {"resize", "area interpolation (cubic when upscaling)"},
        {"image_size", cfg.data.image_size},
        {"mean", cfg.data.mean},
        {"std", cfg.data.std},
        {"channel_order", "RGB"}}},
      {"config", config::to_yaml(cfg)}};
}

}  // namespace

ExportResult export_checkpoint(const std::string& checkpoint, const std::string& out_dir,
                               const std::vector<std::string>& parts) {
  RETCLIP_CHECK_USAGE(!parts.empty(), "--parts is empty: expected any of vision, text, full");
  for (const auto& p : parts)
    RETCLIP_CHECK_USAGE(p == "vision" || p == "text" || p == "full", "unknown export part '", p,
                        "': expected vision, text or full");
  const fs::path ck = resolve_checkpoint_dir(checkpoint);
  config::Config cfg = config::load_string(util::read_file(ck / "config.yaml"),
                                           (ck / "config.yaml").string());
  io::StateDict sd = io::load_weights(ck / "model.safetensors");
  json meta = json::parse(util::read_file(ck / "trainer.json"));
  const int64_t step = meta.at("step").get<int64_t>();

  fs::create_directories(out_dir);
  std::string tok_file;
  if (!cfg.data.tokenizer.path.empty() && fs::exists(cfg.data.tokenizer.path)) {
    tok_file = fs::path(cfg.data.tokenizer.path).filename().string();
    util::write_file_atomic(fs::path(out_dir) / tok_file, util::read_file(cfg.data.tokenizer.path));
  }
  int64_t vocab = 0;
  for (const auto& [k, v] : sd)
    if (k == "bert.embeddings.word_embeddings.weight") vocab = v.size(0);
  model::RetClipOptions opts = model::retclip_options(cfg.model, vocab);

  ExportResult res;
  res.step = step;
  json files = json::object();
  const std::map<std::string, std::string> st_meta{{"format", "retclip"}, {"step", std::to_string(step)}};
  for (const auto& part : parts) {
    io::StateDict sel;
    for (const auto& [k, v] : sd)
      if (part == "full" || (part == "vision" && is_vision_key(k)) || (part == "text" && is_text_key(k)))
        sel.emplace_back(k, v);
    fs::path f = fs::path(out_dir) / (part + ".safetensors");
    io::save_weights(f, sel, st_meta);
    files[part] = f.filename().string();
    res.files.push_back(f);
    log::info("export: {} ({} tensors)", f.string(), sel.size());
  }
  fs::path side = fs::path(out_dir) / "retclip.json";
  util::write_file_atomic(side, sidecar(cfg, opts, step, tok_file, files).dump(2));
  res.files.push_back(side);
  return res;
}

int64_t embed_manifest(const EmbedOptions& o) {
  const fs::path dir(o.weights);
  const fs::path side_path = dir / "retclip.json";
  json side = json::parse(util::read_file(side_path));
  RETCLIP_CHECK_USAGE(side.value("format", "") == "retclip-export", side_path.string(),
                      " is not a retclip export sidecar");
  config::Config cfg = config::load_string(side.at("config").get<std::string>(), side_path.string());
  RETCLIP_CHECK_USAGE(side.at("files").contains("full"), "embed needs full.safetensors in ",
                      dir.string(), ". HINT: export with --parts full");
  const std::string tok_name = side.at("tokenizer").at("file").get<std::string>();
  RETCLIP_CHECK_USAGE(!tok_name.empty(), side_path.string(), " names no tokenizer file");
  auto tok = data::load_tokenizer(cfg.data.tokenizer.type, (dir / tok_name).string(),
                                  cfg.data.tokenizer.lowercase);
  model::RetClip net(model::retclip_options(cfg.model, tok->vocab_size()));
  io::apply_state_dict(*net, io::load_weights(dir / side.at("files").at("full").get<std::string>()),
                       /*strict=*/true);
  at::Device device = (o.device != "cpu" && torch::cuda::is_available()) ? at::Device(at::kCUDA, 0)
                                                                         : at::Device(at::kCPU);
  net->to(device);
  net->eval();

  data::ReadReport rep;
  auto samples = data::read_samples(o.manifest, "auto", o.split, data::BadSamplePolicy::kFail, &rep);
  RETCLIP_CHECK_USAGE(!samples.empty(), "no patients in ", o.manifest);
  const int64_t S = cfg.data.image_size, T = cfg.data.context_length;
  data::AugmentParams no_aug;
  std::map<std::string, std::vector<at::Tensor>> out;
  std::vector<std::string> ids;
  util::Progress bar("embed", static_cast<int64_t>(samples.size()), "patients");
  torch::NoGradGuard ng;
  for (size_t s = 0; s < samples.size(); s += static_cast<size_t>(o.batch_size)) {
    size_t e = std::min(samples.size(), s + static_cast<size_t>(o.batch_size));
    const int64_t B = static_cast<int64_t>(e - s);
    at::Tensor left = at::zeros({B, 3, S, S}), right = at::zeros({B, 3, S, S});
    at::Tensor tokens = at::zeros({B, T}, at::kLong);
    at::Tensor hl = at::zeros({B}, at::kBool), hr = at::zeros({B}, at::kBool);
    for (int64_t i = 0; i < B; ++i) {
      const auto& smp = samples[s + static_cast<size_t>(i)];
      ids.push_back(smp.patient_id);
      auto eye = [&](const data::ImageRef& ref, at::Tensor& dst, at::Tensor& has) {
        if (!ref.present()) return;
        cv::Mat img = data::fundus_preprocess(data::decode_image(ref), S, ref.describe());
        dst[i] = data::to_tensor(img, no_aug, 0, cfg.data.mean, cfg.data.std);
        has[i] = true;
      };
      eye(smp.left, left, hl);
      eye(smp.right, right, hr);
      auto t = tok->encode(smp.report, T);
      tokens[i] = at::tensor(t, at::kLong);
    }
    model::Embeddings emb = net->forward(left.to(device), right.to(device), tokens.to(device),
                                         hl.to(device), hr.to(device));
    for (auto [name, t] : {std::pair<const char*, at::Tensor*>{"patient_img", &emb.patient_img},
                           {"left_img", &emb.left_img}, {"right_img", &emb.right_img},
                           {"patient_txt", &emb.patient_txt}, {"left_txt", &emb.left_txt},
                           {"right_txt", &emb.right_txt}})
      out[name].push_back(t->to(at::kCPU, at::kFloat));
    if (o.save_inputs) {
      out["input_left"].push_back(left);
      out["input_right"].push_back(right);
      out["input_tokens"].push_back(tokens);
    }
    out["has_left"].push_back(hl.to(at::kByte));
    out["has_right"].push_back(hr.to(at::kByte));
    bar.advance(B);
  }
  bar.finish();
  io::StateDict result;
  for (auto& [name, parts] : out) result.emplace_back(name, at::cat(parts));
  io::save_weights(o.out, result,
                   {{"patient_ids", json(ids).dump()}, {"weights", o.weights}, {"manifest", o.manifest}});
  return static_cast<int64_t>(ids.size());
}

}  // namespace retclip::train
