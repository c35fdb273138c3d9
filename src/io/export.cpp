// retclip export: checkpoint weights split into encoder files plus the retclip.json sidecar,
// and the open_clip / timm / Hugging Face folders (io/interop.hpp).
#include "retclip/io/export.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <sstream>
#include <vector>

#include "retclip/data/image.hpp"
#include "retclip/data/tokenizer.hpp"
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
  const auto& t = o.text();
  json vision = vision_architecture_json(o.vision());
  vision["preset"] = cfg.model.vision.preset;
  return json{{"format", "retclip-export"},
              {"version", 1},
              {"retclip_version", kVersion},
              {"git_hash", kGitHash},
              {"step", step},
              {"embed_dim", o.embed_dim()},
              {"files", files},
              {"vision", vision},
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
               {{"version", data::kPreprocessVersion},
                {"mode", config::name(cfg.data.preprocess)},
                {"fundus_crop", "crop to the circular field of view, pad to square with black"},
                {"resize", "area interpolation (cubic when upscaling)"},
                {"image_size", cfg.data.image_size},
                {"mean", cfg.data.mean},
                {"std", cfg.data.std},
                {"channel_order", "RGB"}}},
              {"config", config::to_yaml(cfg)}};
}

}  // namespace

fs::path checkpoint_tokenizer(const config::Config& cfg, const fs::path& checkpoint_dir) {
  std::error_code ec;
  const std::string& recorded = cfg.data.tokenizer.path;
  if (!recorded.empty() && fs::is_regular_file(recorded, ec)) return recorded;
  // checkpoints/step-N -> the run directory, where `retclip train` keeps its copy.
  const fs::path run = checkpoint_dir.parent_path().parent_path();
  std::vector<std::string> names{"tokenizer.model", "tokenizer.txt"};
  const std::string ext = fs::path(recorded).extension().string();
  if (!ext.empty()) names.insert(names.begin(), "tokenizer" + ext);  // the copy of that file
  for (const std::string& name : names)
    if (fs::is_regular_file(run / name, ec)) return run / name;
  return {};
}

namespace {

// Moves every file under `from` to the same relative path under `to` (replacing what is
// there), creating folders as needed.
void move_tree(const fs::path& from, const fs::path& to) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(from))
    if (e.is_regular_file()) files.push_back(e.path());
  for (const fs::path& f : files) {
    const fs::path dst = to / f.lexically_relative(from);
    fs::create_directories(dst.parent_path());
    fs::rename(f, dst);
  }
}

}  // namespace

ExportResult export_checkpoint(const std::string& checkpoint, const std::string& out_dir,
                               const std::vector<std::string>& parts,
                               const std::vector<ExportFormat>& formats,
                               const std::string& tokenizer) {
  RETCLIP_CHECK_USAGE(!parts.empty(), "--parts is empty: expected any of vision, text, full");
  for (const auto& p : parts)
    RETCLIP_CHECK_USAGE(p == "vision" || p == "text" || p == "full", "unknown export part '", p,
                        "': expected vision, text or full");
  const CheckpointContents ck = open_checkpoint(checkpoint);
  config::Config cfg =
      config::load_string(ck.config_yaml, (ck.dir / CheckpointLayout::kConfig).string());
  StateDict sd = load_weights(ck.weights);
  const int64_t step = ck.step;

  fs::path tok_path = tokenizer.empty() ? checkpoint_tokenizer(cfg, ck.dir) : fs::path(tokenizer);
  RETCLIP_CHECK_USAGE(tokenizer.empty() || fs::is_regular_file(tok_path), "--tokenizer ",
                      tokenizer, " is not a file. HINT: give the vocab.txt or .model the run "
                      "was trained with");
  bool needs_text = false;
  for (const auto& p : parts) needs_text = needs_text || p != "vision";
  for (ExportFormat f : formats)
    needs_text = needs_text || f == ExportFormat::kOpenClip || f == ExportFormat::kHf;
  RETCLIP_CHECK_USAGE(
      !needs_text || !tok_path.empty(), "checkpoint ", ck.dir.string(),
      " names no tokenizer file that exists (data.tokenizer.path: '", cfg.data.tokenizer.path,
      "', and its run directory holds no tokenizer copy): the text tower would be exported "
      "without the tokenizer that reads its inputs. HINT: pass --tokenizer PATH (the vocab.txt "
      "or .model of the run), or --parts vision for the image tower alone");
  int64_t vocab = 0;
  for (const auto& [k, v] : sd)
    if (k == "bert.embeddings.word_embeddings.weight") vocab = v.size(0);
  model::RetClipOptions opts = model::retclip_options(cfg.model, vocab);
  if (!tok_path.empty()) {
    cfg.data.tokenizer.path = tok_path.string();
    // The sidecar names the kind of file it ships, never "auto".
    if (cfg.data.tokenizer.type == "auto")
      cfg.data.tokenizer.type = data::detect_tokenizer_type(tok_path.string());
  }

  ExportBundle bundle;
  bundle.weights = std::move(sd);
  bundle.sidecar = sidecar(cfg, opts, step, tok_path.empty() ? "" : tok_path.filename().string(),
                           json::object());
  bundle.sidecar["training"] = training_summary(cfg, ck.dir, step);
  bundle.tokenizer = tok_path;
  bundle.parts = parts;

  // Stage every format beside out_dir; only a complete export is moved into place.
  const fs::path out = fs::absolute(out_dir).lexically_normal();
  const fs::path stage = out.parent_path() / (".export-" + out.filename().string() + ".tmp-" +
                                              std::to_string(::getpid()));
  bundle.final_out_dir = out;  // open_clip records the absolute path of its text/ folder
  util::remove_tree(stage);
  fs::create_directories(stage);
  std::vector<fs::path> staged;
  try {
    for (ExportFormat f : formats)
      for (auto& p : write_export_format(f, bundle, stage)) staged.push_back(std::move(p));
  } catch (...) {
    std::error_code ec;
    util::remove_tree(stage, ec);
    throw;
  }
  ExportResult res;
  res.step = step;
  fs::create_directories(out);
  move_tree(stage, out);
  util::remove_tree(stage);
  // The paths as the caller named them.
  for (const fs::path& f : staged) res.files.push_back(fs::path(out_dir) / f.lexically_relative(stage));
  return res;
}

}  // namespace retclip::io
