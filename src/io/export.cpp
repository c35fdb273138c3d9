// retclip export: checkpoint weights split into encoder files plus the retclip.json sidecar.
#include "retclip/io/export.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "retclip/io/checkpoint_store.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/version.hpp"

namespace retclip::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

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
  const CheckpointContents ck = open_checkpoint(checkpoint);
  config::Config cfg =
      config::load_string(ck.config_yaml, (ck.dir / CheckpointLayout::kConfig).string());
  StateDict sd = load_weights(ck.weights);
  const int64_t step = ck.step;

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
    StateDict sel;
    for (const auto& [k, v] : sd)
      if (part == "full" || (part == "vision" && is_vision_key(k)) || (part == "text" && is_text_key(k)))
        sel.emplace_back(k, v);
    fs::path f = fs::path(out_dir) / (part + ".safetensors");
    save_weights(f, sel, st_meta);
    files[part] = f.filename().string();
    res.files.push_back(f);
    log::info("export: {} ({} tensors)", f.string(), sel.size());
  }
  fs::path side = fs::path(out_dir) / "retclip.json";
  util::write_file_atomic(side, sidecar(cfg, opts, step, tok_file, files).dump(2));
  res.files.push_back(side);
  return res;
}

}  // namespace retclip::io
