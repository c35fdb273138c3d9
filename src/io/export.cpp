// retclip export: checkpoint weights split into encoder files plus the retclip.json sidecar,
// and the open_clip / timm / Hugging Face folders (io/interop.hpp).
#include "retclip/io/export.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <sstream>

#include "retclip/io/checkpoint_store.hpp"
#include "retclip/io/interop.hpp"
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

// What the model cards report about the run: its data, and the newest held-out (val/*)
// and probe (probe/*) metrics of metrics.jsonl logged at or before the exported step.
json training_summary(const config::Config& cfg, const fs::path& ck, int64_t step) {
  json t{{"data", cfg.data.train},
         {"val", cfg.data.val},
         {"batch_size", cfg.train.batch_size},
         {"lr", cfg.optim.lr}};
  fs::path metrics;
  for (const fs::path& run : {ck.parent_path().parent_path(), fs::path(cfg.log.dir)})
    if (!run.empty() && fs::exists(run / "metrics.jsonl")) {
      metrics = run / "metrics.jsonl";
      break;
    }
  if (metrics.empty()) return t;
  json held_out = json::object(), probe = json::object();
  int64_t held_out_step = -1;
  std::istringstream in(util::read_file(metrics));
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || j["step"].get<int64_t>() > step) continue;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key().rfind("val/", 0) == 0) {
        if (j["step"].get<int64_t>() != held_out_step) held_out = json::object();
        held_out_step = j["step"].get<int64_t>();
        held_out[it.key()] = it.value();
      }
      if (it.key().rfind("probe/", 0) == 0) probe[it.key()] = it.value();
    }
  }
  t["held_out"] = held_out;
  t["held_out_step"] = held_out_step;
  t["probe"] = probe;
  return t;
}

json sidecar(const config::Config& cfg, const model::RetClipOptions& o, int64_t step,
             const std::string& tokenizer_file, const json& files) {
  const auto& v = o.vision();
  const auto& t = o.text();
  return json{{"format", "retclip-export"},
              {"version", 1},
              {"retclip_version", kVersion},
              {"git_hash", kGitHash},
              {"step", step},
              {"embed_dim", o.embed_dim()},
              {"files", files},
              {"vision",
               {{"preset", cfg.model.vision.preset},
                {"image_size", v.image_size()},
                {"patch_size", v.patch_size()},
                {"width", v.width()},
                {"layers", v.layers()},
                {"heads", v.heads() > 0 ? v.heads() : v.width() / 64},
                {"mlp_ratio", v.mlp_ratio()},
                {"activation", "quick_gelu"}}},
              {"text",
               {{"preset", cfg.model.text.preset},
                {"vocab_size", t.vocab_size()},
                {"hidden", t.hidden()},
                {"layers", t.layers()},
                {"heads", t.heads()},
                {"intermediate", t.intermediate()},
                {"max_position", t.max_position()},
                {"layer_norm_eps", t.layer_norm_eps()},
                {"pad_id", t.pad_id()},
                {"context_length", cfg.data.context_length},
                {"dropout", cfg.model.text.dropout},
                {"output", "hidden state of token 0 ([CLS])"}}},
              {"tokenizer",
               {{"type", cfg.data.tokenizer.type},
                {"file", tokenizer_file},
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
                               const std::vector<std::string>& parts,
                               const std::vector<ExportFormat>& formats) {
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
  fs::path tok_path;
  if (!cfg.data.tokenizer.path.empty() && fs::exists(cfg.data.tokenizer.path))
    tok_path = cfg.data.tokenizer.path;
  int64_t vocab = 0;
  for (const auto& [k, v] : sd)
    if (k == "bert.embeddings.word_embeddings.weight") vocab = v.size(0);
  model::RetClipOptions opts = model::retclip_options(cfg.model, vocab);

  ExportBundle bundle;
  bundle.weights = std::move(sd);
  bundle.sidecar = sidecar(cfg, opts, step, tok_path.empty() ? "" : tok_path.filename().string(),
                           json::object());
  bundle.sidecar["training"] = training_summary(cfg, ck.dir, step);
  bundle.tokenizer = tok_path;
  bundle.parts = parts;
  ExportResult res;
  res.step = step;
  for (ExportFormat f : formats)
    for (auto& p : write_export_format(f, bundle, out_dir)) res.files.push_back(std::move(p));
  return res;
}

}  // namespace retclip::io
