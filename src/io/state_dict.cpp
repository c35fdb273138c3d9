// Loading state dicts from the file formats retclip imports, saving them as
// safetensors, and copying them into modules with a load report.
#include "retclip/io/state_dict.hpp"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/import.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <unordered_map>

#include "retclip/io/interop.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/strings.hpp"
#include "torch_pickle.hpp"

namespace retclip::io {

namespace fs = std::filesystem;

namespace {

using util::starts_with;

std::string shape_str(at::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::string read_prefix(const fs::path& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  RETCLIP_CHECK_USAGE(in.good(), "cannot open weights file ", path.string(), ": ",
                      std::strerror(errno), ". HINT: check the path");
  std::string s(n, '\0');
  in.read(s.data(), static_cast<std::streamsize>(n));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

void check_unique(const StateDict& sd, const std::string& where) {
  std::set<std::string> seen;
  for (const auto& [k, v] : sd)
    RETCLIP_CHECK_USAGE(seen.insert(k).second, where, ": key '", k,
                        "' appears twice (after removing a leading 'module.'). HINT: the file holds "
                        "two copies of the model; save only one state dict into it");
}

/// Refuses NaN/Inf in floating-point tensors: such weights only produce NaN embeddings
/// or steps that are all skipped, and nothing downstream names the file.
void check_finite(const StateDict& sd, const std::string& where) {
  for (const auto& [k, v] : sd) {
    if (!v.is_floating_point() || v.numel() == 0) continue;
    if (at::isfinite(v).all().item<bool>()) continue;
    const int64_t nan = at::isnan(v).sum().item<int64_t>();
    const int64_t inf = at::isinf(v).sum().item<int64_t>();
    throw UsageError(str_cat(where, ": tensor '", k, "' holds non-finite values (", nan, " NaN, ",
                             inf, " Inf of ", v.numel(),
                             "). HINT: the weights come from a run that diverged or the file is "
                             "damaged; use an earlier checkpoint or export the weights again"));
  }
}

StateDict load_torchscript(const fs::path& path) {
  torch::jit::Module m;
  try {
    m = torch::jit::load(path.string(), c10::Device(c10::kCPU));
  } catch (const c10::Error& e) {
    throw UsageError(str_cat(path.string(), ": cannot load TorchScript archive: ",
                             e.what_without_backtrace(), ". HINT: the archive may need a newer torch"));
  }
  StateDict sd;
  for (const auto& p : m.named_parameters(/*recurse=*/true))
    sd.emplace_back(p.name, p.value.detach().contiguous());
  for (const auto& b : m.named_buffers(/*recurse=*/true))
    sd.emplace_back(b.name, b.value.detach().contiguous());
  return sd;
}

StateDict load_hf_index(const fs::path& path) {
  const std::string where = path.string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(util::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(str_cat(where, ": not valid JSON (", e.what(), ")"));
  }
  RETCLIP_CHECK_USAGE(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), where,
                      ": expected a \"weight_map\" object (Hugging Face shard index)");
  std::vector<std::string> files;
  std::unordered_map<std::string, std::string> owner;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    RETCLIP_CHECK_USAGE(it.value().is_string(), where, ": weight_map[\"", it.key(), "\"] is not a file name");
    const std::string f = it.value().get<std::string>();
    if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    owner[it.key()] = f;
  }
  StateDict sd;
  for (const auto& f : files) {
    auto shard = read_safetensors(path.parent_path() / f);
    for (auto& [k, t] : shard.tensors) {
      auto it = owner.find(k);
      RETCLIP_CHECK_USAGE(it != owner.end() && it->second == f, where, ": shard ", f, " holds '", k,
                          "', which the index does not assign to it. HINT: the index and shards "
                          "come from different exports");
      sd.emplace_back(k, std::move(t));
    }
  }
  RETCLIP_CHECK_USAGE(sd.size() == owner.size(), where, ": the index names ", owner.size(),
                      " tensors but the shards hold ", sd.size());
  return sd;
}

fs::path resolve_folder(const fs::path& dir) {
  for (const char* name : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"})
    if (fs::exists(dir / name)) return dir / name;
  std::string found;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (found.size() > 300) break;
    found += (found.empty() ? "" : ", ") + e.path().filename().string();
  }
  throw UsageError(str_cat(dir.string(), " is a folder without model.safetensors, "
                           "model.safetensors.index.json or pytorch_model.bin (found: ", found,
                           "). HINT: pass the weights file itself"));
}

}  // namespace

const char* format_name(WeightsFormat f) {
  switch (f) {
    case WeightsFormat::kSafetensors: return "safetensors";
    case WeightsFormat::kTorchZip: return "torch.save zip";
    case WeightsFormat::kTorchScript: return "TorchScript archive";
    case WeightsFormat::kHfSafetensorsIndex: return "safetensors shard index";
  }
  return "unknown";
}

WeightsFormat detect_weights_format(const fs::path& path) {
  const std::string where = path.string();
  const std::string head = read_prefix(path, 16);
  if (head.size() >= 4 && head.compare(0, 4, "PK\x03\x04") == 0) {
    std::vector<std::string> records;
    try {
      caffe2::serialize::PyTorchStreamReader reader(where);
      records = reader.getAllRecords();
    } catch (const c10::Error& e) {
      throw UsageError(str_cat(where, ": a zip file but not a PyTorch archive: ",
                               e.what_without_backtrace(), ". HINT: the file may be truncated"));
    }
    bool has_data = false, has_code = false;
    for (const auto& r : records) {
      if (r == "data.pkl") has_data = true;
      if (r == "constants.pkl" || starts_with(r, "code/")) has_code = true;
    }
    if (has_code) return WeightsFormat::kTorchScript;
    if (has_data) return WeightsFormat::kTorchZip;
    throw UsageError(str_cat(where, ": a zip file without data.pkl; not written by torch.save or "
                             "torch.jit.save. HINT: pass a .pt/.bin/.safetensors weights file"));
  }
  // Safetensors first: its little-endian header length can start with 0x80 too (e.g. 0x2e80).
  if (head.size() >= 9 && head[8] == '{') return WeightsFormat::kSafetensors;
  if (!head.empty() && static_cast<unsigned char>(head[0]) == 0x80)
    throw UsageError(str_cat(where, ": a legacy (pre-1.6, non-zip) torch.save pickle, which LibTorch "
                             "cannot read. HINT: in Python run torch.save(torch.load(p), out) to "
                             "rewrite it as a zip archive, or save_file() it as safetensors"));
  if (!head.empty() && head[0] == '{') return WeightsFormat::kHfSafetensorsIndex;
  throw UsageError(str_cat(where, ": unrecognised weights format (expected safetensors, a torch.save "
                           "zip or a TorchScript archive). HINT: check that the download completed"));
}

StateDict load_weights(const fs::path& path, std::map<std::string, std::string>* metadata) {
  fs::path file = fs::is_directory(path) ? resolve_folder(path) : path;
  const WeightsFormat fmt = detect_weights_format(file);
  StateDict sd;
  if (metadata) metadata->clear();
  switch (fmt) {
    case WeightsFormat::kSafetensors: {
      SafetensorsFile f = read_safetensors(file);
      sd = std::move(f.tensors);
      if (metadata) *metadata = std::move(f.metadata);
      break;
    }
    case WeightsFormat::kTorchZip: sd = detail::load_torch_zip(file); break;
    case WeightsFormat::kTorchScript: sd = load_torchscript(file); break;
    case WeightsFormat::kHfSafetensorsIndex: sd = load_hf_index(file); break;
  }
  sd = strip_prefix(sd, "module.");
  check_unique(sd, file.string());
  check_finite(sd, file.string());
  log::debug("loaded {} tensors from {} ({})", sd.size(), file.string(), format_name(fmt));
  return sd;
}

void save_weights(const fs::path& path, const StateDict& sd,
                  const std::map<std::string, std::string>& metadata) {
  write_safetensors(path, sd, metadata);
}

StateDict strip_prefix(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  out.reserve(sd.size());
  for (const auto& [k, v] : sd)
    out.emplace_back(starts_with(k, prefix) ? k.substr(prefix.size()) : k, v);
  return out;
}

StateDict filter_prefix(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, v] : sd)
    if (starts_with(k, prefix)) out.emplace_back(k, v);
  return out;
}

const at::Tensor* find_tensor(const StateDict& sd, const std::string& name) {
  for (const auto& [k, v] : sd)
    if (k == name) return &v;
  return nullptr;
}

StateDict module_state_dict(const torch::nn::Module& module) {
  StateDict sd;
  for (const auto& p : module.named_parameters(true)) sd.emplace_back(p.key(), p.value().detach());
  for (const auto& b : module.named_buffers(true)) sd.emplace_back(b.key(), b.value().detach());
  return sd;
}

std::string LoadReport::to_string(size_t max_items) const {
  auto list = [max_items](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < max_items; ++i) s += (i ? ", " : "") + v[i];
    if (v.size() > max_items) s += str_cat(", ... (", v.size() - max_items, " more)");
    return s;
  };
  std::string s = str_cat("loaded ", loaded.size(), " tensors");
  if (!missing.empty()) s += str_cat("; ", missing.size(), " missing: ", list(missing));
  if (!unexpected.empty()) s += str_cat("; ", unexpected.size(), " unexpected: ", list(unexpected));
  if (!shape_mismatch.empty()) {
    s += str_cat("; ", shape_mismatch.size(), " shape mismatch: ");
    for (size_t i = 0; i < shape_mismatch.size() && i < max_items; ++i)
      s += str_cat(i ? ", " : "", shape_mismatch[i].name, " (expected ",
                   shape_str(shape_mismatch[i].expected), ", found ", shape_str(shape_mismatch[i].found), ")");
    if (shape_mismatch.size() > max_items) s += str_cat(", ... (", shape_mismatch.size() - max_items, " more)");
  }
  return s;
}

LoadReport apply_state_dict(torch::nn::Module& module, const StateDict& sd, bool strict,
                            const std::string& prefix_filter) {
  check_unique(sd, "state dict");
  std::unordered_map<std::string, const at::Tensor*> src;
  for (const auto& [k, v] : sd)
    if (starts_with(k, prefix_filter)) src.emplace(k, &v);

  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (const auto& p : module.named_parameters(true))
    if (starts_with(p.key(), prefix_filter)) targets.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(true))
    if (starts_with(b.key(), prefix_filter)) targets.emplace_back(b.key(), b.value());

  LoadReport report;
  std::set<std::string> target_names;
  std::vector<std::pair<at::Tensor, const at::Tensor*>> copies;
  for (const auto& [name, t] : targets) {
    target_names.insert(name);
    auto it = src.find(name);
    if (it == src.end()) {
      report.missing.push_back(name);
    } else if (it->second->sizes() != t.sizes()) {
      report.shape_mismatch.push_back({name, t.sizes().vec(), it->second->sizes().vec()});
    } else {
      report.loaded.push_back(name);
      copies.emplace_back(t, it->second);
    }
  }
  for (const auto& [k, v] : sd)
    if (starts_with(k, prefix_filter) && !target_names.count(k)) report.unexpected.push_back(k);

  if (strict && !report.ok())
    throw UsageError(str_cat("state dict does not match the model",
                             prefix_filter.empty() ? "" : str_cat(" (keys under '", prefix_filter, "')"),
                             ": ", report.to_string(),
                             ". HINT: check that model.vision.preset and model.text.preset (and any size "
                             "overrides) match the ones the weights were trained with"));
  torch::NoGradGuard no_grad;
  for (auto& [dst, s] : copies) dst.copy_(*s);
  return report;
}

namespace {

std::string list_keys(const std::vector<std::string>& keys, size_t max_items) {
  std::string s;
  for (size_t i = 0; i < keys.size() && i < max_items; ++i) s += (i ? ", " : "") + keys[i];
  if (keys.size() > max_items) s += fmt::format(", ... ({} more)", keys.size() - max_items);
  return s;
}

// A timm tower loads whole: every tensor of retclip's tower but the new projection
// (visual.proj) comes from the file. One exception is RETFound's fine-tuning recipe:
// avg pooling with a fresh fc_norm where the checkpoint has a final norm (ln_post).
void check_timm_vision_load(LoadReport& rep, const StateDict& visual) {
  const bool has_norm = find_tensor(visual, "visual.ln_post.weight") != nullptr;
  std::vector<std::string> missing, unexpected, mismatch;
  bool fresh_fc_norm = false;
  for (const auto& k : rep.missing) {
    if (k == "visual.proj") continue;
    if (has_norm && starts_with(k, "visual.fc_norm.")) {
      fresh_fc_norm = true;
      continue;
    }
    missing.push_back(k);
  }
  for (const auto& k : rep.unexpected)
    if (!(fresh_fc_norm && starts_with(k, "visual.ln_post."))) unexpected.push_back(k);
  for (const auto& m : rep.shape_mismatch)
    mismatch.push_back(fmt::format("{} (expected {}, found {})", m.name, fmt::join(m.expected, "x"),
                                   fmt::join(m.found, "x")));
  RETCLIP_CHECK_USAGE(
      missing.empty() && unexpected.empty() && mismatch.empty(),
      "the timm ViT does not fit the image tower: ",
      missing.empty() ? "" : "missing " + list_keys(missing, 10) + "; ",
      unexpected.empty() ? "" : "not in the tower " + list_keys(unexpected, 10) + "; ",
      mismatch.empty() ? "" : "shape mismatch " + list_keys(mismatch, 10) + "; ",
      "HINT: with model.vision.preset=checkpoint the tower's architecture is read "
      "from this file; check model.vision.* overrides (docs/WEIGHTS.md)");
  if (fresh_fc_norm)
    log::info(
        "vision: avg pool + a new fc_norm (initialised to 1, 0) in place of the "
        "checkpoint's final norm, as RETFound fine-tunes (model.vision.pool=avg_fc_norm)");
  // What is new by design is said above and in the log line of the projection; the report
  // keeps only what would be a surprise (nothing, past the check).
  const bool new_proj =
      std::find(rep.missing.begin(), rep.missing.end(), "visual.proj") != rep.missing.end();
  if (new_proj)
    log::info(
        "vision: visual.proj is a new layer (the file has no projection), initialised "
        "as CLIP's");
  rep.missing.clear();
  rep.unexpected.clear();
}

}  // namespace

LoadReport load_pretrained(torch::nn::Module& module, const fs::path& path, Pretrained kind,
                           const std::string& key, int64_t vision_grid) {
  const std::string where = path.string();
  try {
    StateDict sd = load_weights(path);
    switch (kind) {
      case Pretrained::kFull:
        return apply_state_dict(module, map_retclip(sd), /*strict=*/true);
      case Pretrained::kVision: {
        std::optional<double> scale;
        for (const auto& [k, v] : sd)
          if (k == "logit_scale" && v.numel() == 1) scale = v.to(at::kDouble).item<double>();
        const bool timm = is_timm_vit(sd);
        if (timm) {
          const std::vector<std::string> ignored = import_timm_vit(sd).ignored;
          if (!ignored.empty())
            log::info("{}: {} keys the image tower does not use, ignored: {}", key, ignored.size(),
                      list_keys(ignored, 12));
        }
        const StateDict visual = map_openai_clip_visual(sd, vision_grid);
        LoadReport rep = apply_state_dict(module, visual, false, "visual.");
        rep.logit_scale = scale;
        if (timm) check_timm_vision_load(rep, visual);
        return rep;
      }
      case Pretrained::kText:
        return apply_state_dict(module, map_hf_bert(sd), false, "bert.");
    }
  } catch (const UsageError& e) {
    // Errors from the layers below name the file when they know it; say once which
    // setting pointed at it.
    std::string msg = e.what();
    if (starts_with(msg, where + ": ")) msg = msg.substr(where.size() + 2);
    std::string more;
    if (kind == Pretrained::kFull && msg.find("does not match the model") != std::string::npos)
      more = str_cat(". ", key,
                     " takes a whole retclip or RET-CLIP checkpoint; CLIP image weights go in "
                     "model.init.vision and Hugging Face BERT weights in model.init.text");
    throw UsageError(str_cat(key, " = ", where, ": ", msg, more));
  }
  throw UsageError(str_cat(key, " = ", where, ": unknown kind of pretrained weights"));
}

}  // namespace retclip::io
