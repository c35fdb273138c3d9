// Export formats other libraries load as their own (open_clip, timm, Hugging Face),
// their key maps, model cards, and the sizes of pretrained towers read from their
// files for the "hf" and "checkpoint" presets.
#include "retclip/io/interop.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/version.hpp"

namespace retclip::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

bool starts_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(0, p.size(), p) == 0;
}

bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Replaces the first occurrence of `from` in `s` (a key segment) by `to`.
std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

// Segment renames inside one ViT block, CLIP name first, timm name second.
const std::vector<std::pair<std::string, std::string>>& block_renames() {
  static const std::vector<std::pair<std::string, std::string>> r{
      {".ln_1.", ".norm1."},
      {".ln_2.", ".norm2."},
      {".attn.in_proj_weight", ".attn.qkv.weight"},
      {".attn.in_proj_bias", ".attn.qkv.bias"},
      {".attn.out_proj.", ".attn.proj."},
      {".mlp.c_fc.", ".mlp.fc1."},
      {".mlp.c_proj.", ".mlp.fc2."}};
  return r;
}

const std::vector<std::pair<std::string, std::string>>& stem_renames() {
  static const std::vector<std::pair<std::string, std::string>> r{
      {"conv1.weight", "patch_embed.proj.weight"},
      {"ln_pre.weight", "norm_pre.weight"},
      {"ln_pre.bias", "norm_pre.bias"},
      {"ln_post.weight", "norm.weight"},
      {"ln_post.bias", "norm.bias"}};
  return r;
}

bool is_head_key(const std::string& k) {
  return starts_with(k, "text_projection") || starts_with(k, "global_feature_mapping.") ||
         starts_with(k, "left_feature_mapping.") || starts_with(k, "right_feature_mapping.") ||
         starts_with(k, "logit_scale");
}

json open_json(const fs::path& path) {
  try {
    return json::parse(util::read_file(path));
  } catch (const json::exception& e) {
    throw UsageError(str_cat(path.string(), ": not valid JSON (", e.what(),
                             "). HINT: the file must be a Hugging Face config.json"));
  }
}

void write_json(const fs::path& path, const json& j, std::vector<fs::path>& files) {
  util::write_file_atomic(path, j.dump(2) + "\n");
  files.push_back(path);
}

void write_st(const fs::path& path, const StateDict& sd, const std::string& format,
              std::vector<fs::path>& files) {
  save_weights(path, sd, {{"format", format}});
  files.push_back(path);
  log::info("export: {} ({} tensors)", path.string(), sd.size());
}

StateDict require_prefix(const StateDict& sd, const std::string& prefix, const char* tower) {
  StateDict out = filter_prefix(sd, prefix);
  RETCLIP_CHECK_USAGE(!out.empty(), "export: the checkpoint has no ", tower, " tensors (", prefix,
                      "*). HINT: export from a full retclip checkpoint (--checkpoint)");
  return out;
}

// --- per-format descriptions used by the writers and the model cards ------------------

struct VisionDesc {
  int64_t image = 0, patch = 0, width = 0, layers = 0, heads = 0, embed = 0;
  double mlp_ratio = 4.0;
};

VisionDesc vision_desc(const json& side) {
  const json& v = side.at("vision");
  VisionDesc d;
  d.image = v.at("image_size").get<int64_t>();
  d.patch = v.at("patch_size").get<int64_t>();
  d.width = v.at("width").get<int64_t>();
  d.layers = v.at("layers").get<int64_t>();
  d.heads = v.at("heads").get<int64_t>();
  d.mlp_ratio = v.at("mlp_ratio").get<double>();
  d.embed = side.at("embed_dim").get<int64_t>();
  return d;
}

// open_clip's built-in architecture with the same tower, or "" (then the folder's
// open_clip_config.json defines it).
std::string open_clip_arch(const VisionDesc& d) {
  if (d.heads * 64 != d.width || d.mlp_ratio != 4.0) return "";
  if (d.image == 224 && d.patch == 16 && d.width == 768 && d.layers == 12 && d.embed == 512)
    return "ViT-B-16-quickgelu";
  if (d.image == 224 && d.patch == 32 && d.width == 768 && d.layers == 12 && d.embed == 512)
    return "ViT-B-32-quickgelu";
  if (d.image == 224 && d.patch == 14 && d.width == 1024 && d.layers == 24 && d.embed == 768)
    return "ViT-L-14-quickgelu";
  return "";
}

// timm's registered CLIP ViT (QuickGELU variant: CLIP's activation, as retclip's) with
// the same tower; "" when none matches (then model_args in config.json build it).
std::string timm_arch(const VisionDesc& d) {
  if (d.heads * 64 != d.width || d.mlp_ratio != 4.0) return "";
  if (d.image == 224 && d.patch == 16 && d.width == 768 && d.layers == 12)
    return "vit_base_patch16_clip_quickgelu_224";
  if (d.image == 224 && d.patch == 32 && d.width == 768 && d.layers == 12)
    return "vit_base_patch32_clip_quickgelu_224";
  if (d.image == 224 && d.patch == 14 && d.width == 1024 && d.layers == 24)
    return "vit_large_patch14_clip_quickgelu_224";
  return "";
}

// The architecture the timm folder names: the matching one, else the base CLIP ViT
// whose every size model_args overrides.
std::string timm_architecture(const VisionDesc& d) {
  const std::string a = timm_arch(d);
  return a.empty() ? "vit_base_patch16_clip_quickgelu_224" : a;
}

json timm_model_args(const VisionDesc& d) {
  return json{{"img_size", d.image}, {"patch_size", d.patch},    {"embed_dim", d.width},
              {"depth", d.layers},   {"num_heads", d.heads},     {"mlp_ratio", d.mlp_ratio},
              {"pre_norm", true},    {"act_layer", "quick_gelu"}};
}

std::string py_args(const json& args) {
  std::string s;
  for (auto it = args.begin(); it != args.end(); ++it)
    s += fmt::format(
        ", {}={}", it.key(),
        it.value().is_boolean() ? (it.value().get<bool>() ? "True" : "False") : it.value().dump());
  return s;
}

std::string fmt_list(const json& a) {
  std::string s;
  for (const auto& x : a) s += (s.empty() ? "" : ", ") + fmt::format("{}", x.get<double>());
  return "(" + s + ")";
}

bool is_wordpiece(const json& side) {
  return side.at("tokenizer").value("type", "") == "wordpiece";
}

// --- writers -------------------------------------------------------------------------

std::vector<fs::path> write_retclip(const ExportBundle& b, const fs::path& dir) {
  std::vector<fs::path> files;
  json side = b.sidecar;
  json parts = json::object();
  const std::string step = std::to_string(side.value("step", int64_t{0}));
  for (const auto& part : b.parts) {
    StateDict sel;
    for (const auto& [k, v] : b.weights) {
      const bool vision = starts_with(k, "visual.") || ends_with(k, "_feature_mapping.weight");
      const bool text = starts_with(k, "bert.") || starts_with(k, "text_projection");
      if (part == "full" || (part == "vision" && vision) || (part == "text" && text))
        sel.emplace_back(k, v);
    }
    const fs::path f = dir / (part + ".safetensors");
    save_weights(f, sel, {{"format", "retclip"}, {"step", step}});
    files.push_back(f);
    parts[part] = f.filename().string();
    log::info("export: {} ({} tensors)", f.string(), sel.size());
  }
  if (!b.tokenizer.empty()) {
    const fs::path t = dir / b.tokenizer.filename();
    if (fs::absolute(t) != fs::absolute(b.tokenizer))
      util::write_file_atomic(t, util::read_file(b.tokenizer));
    side["tokenizer"]["file"] = t.filename().string();
    files.push_back(t);
  }
  side["files"] = parts;
  write_json(dir / "retclip.json", side, files);
  return files;
}

std::vector<fs::path> write_open_clip(const ExportBundle& b, const fs::path& dir) {
  std::vector<fs::path> files;
  const VisionDesc d = vision_desc(b.sidecar);
  write_st(dir / "visual.safetensors",
           to_open_clip_visual(require_prefix(b.weights, "visual.", "vision")), "open_clip", files);
  write_st(dir / "retclip_heads.safetensors", retclip_heads(b.weights), "retclip", files);
  // open_clip builds a whole CLIP from model_cfg; its text tower is not retclip's (that is
  // in the hf format), so the smallest one open_clip accepts keeps the model cheap.
  json vision_cfg{{"image_size", d.image},
                  {"layers", d.layers},
                  {"width", d.width},
                  {"patch_size", d.patch},
                  {"head_width", d.width / d.heads},
                  {"mlp_ratio", d.mlp_ratio}};
  json model_cfg{{"embed_dim", d.embed},
                 {"quick_gelu", true},
                 {"vision_cfg", vision_cfg},
                 {"text_cfg",
                  {{"context_length", 77},
                   {"vocab_size", 49408},
                   {"width", 64},
                   {"heads", 1},
                   {"layers", 1}}}};
  const json& pre = b.sidecar.at("preprocessing");
  write_json(dir / "open_clip_config.json",
             json{{"model_cfg", model_cfg},
                  {"preprocess_cfg",
                   {{"mean", pre.at("mean")},
                    {"std", pre.at("std")},
                    {"size", d.image},
                    {"interpolation", "bicubic"},
                    {"resize_mode", "shortest"}}},
                  {"retclip_arch", open_clip_arch(d)}},
             files);
  return files;
}

std::vector<fs::path> write_timm(const ExportBundle& b, const fs::path& dir) {
  std::vector<fs::path> files;
  const VisionDesc d = vision_desc(b.sidecar);
  write_st(dir / "model.safetensors", to_timm_vit(require_prefix(b.weights, "visual.", "vision")),
           "pt", files);
  write_st(dir / "retclip_heads.safetensors", retclip_heads(b.weights), "retclip", files);
  const json& pre = b.sidecar.at("preprocessing");
  write_json(dir / "config.json",
             json{{"architecture", timm_architecture(d)},
                  {"num_classes", d.embed},
                  {"num_features", d.width},
                  {"model_args", timm_model_args(d)},
                  {"pretrained_cfg",
                   {{"input_size", {3, d.image, d.image}},
                    {"fixed_input_size", true},
                    {"interpolation", "bicubic"},
                    {"crop_pct", 1.0},
                    {"crop_mode", "center"},
                    {"mean", pre.at("mean")},
                    {"std", pre.at("std")},
                    {"num_classes", d.embed},
                    {"pool_size", nullptr},
                    {"first_conv", "patch_embed.proj"},
                    {"classifier", "head"}}}},
             files);
  return files;
}

std::vector<fs::path> write_hf(const ExportBundle& b, const fs::path& dir) {
  std::vector<fs::path> files;
  const json& t = b.sidecar.at("text");
  const json& tok = b.sidecar.at("tokenizer");
  const std::string type = tok.value("type", "");
  RETCLIP_CHECK_USAGE(!b.tokenizer.empty() && fs::exists(b.tokenizer),
                      "export --format hf: the run's tokenizer file (",
                      b.tokenizer.empty() ? std::string("none") : b.tokenizer.string(),
                      ") is needed beside the weights but was not found. HINT: keep "
                      "data.tokenizer.path of the run readable, or export --format retclip");
  write_st(dir / "model.safetensors", to_hf_bert(require_prefix(b.weights, "bert.", "text")), "pt",
           files);
  write_st(dir / "retclip_heads.safetensors", retclip_heads(b.weights), "retclip", files);
  const int64_t context = t.at("context_length").get<int64_t>();
  write_json(dir / "config.json",
             json{{"architectures", {"BertModel"}},
                  {"model_type", "bert"},
                  {"vocab_size", t.at("vocab_size")},
                  {"hidden_size", t.at("hidden")},
                  {"num_hidden_layers", t.at("layers")},
                  {"num_attention_heads", t.at("heads")},
                  {"intermediate_size", t.at("intermediate")},
                  {"hidden_act", "gelu"},
                  {"hidden_dropout_prob", t.value("dropout", 0.1)},
                  {"attention_probs_dropout_prob", t.value("dropout", 0.1)},
                  {"max_position_embeddings", t.at("max_position")},
                  {"type_vocab_size", 2},
                  {"initializer_range", 0.02},
                  {"layer_norm_eps", t.at("layer_norm_eps")},
                  {"pad_token_id", t.at("pad_id")},
                  {"position_embedding_type", "absolute"},
                  {"torch_dtype", "float32"}},
             files);
  if (type == "wordpiece") {
    const fs::path v = dir / "vocab.txt";
    util::write_file_atomic(v, util::read_file(b.tokenizer));
    files.push_back(v);
    const bool lower = tok.value("lowercase", true);
    write_json(dir / "tokenizer_config.json",
               json{{"tokenizer_class", "BertTokenizer"},
                    {"do_lower_case", lower},
                    {"do_basic_tokenize", true},
                    {"tokenize_chinese_chars", true},
                    {"strip_accents", nullptr},
                    {"unk_token", "[UNK]"},
                    {"sep_token", "[SEP]"},
                    {"pad_token", "[PAD]"},
                    {"cls_token", "[CLS]"},
                    {"mask_token", "[MASK]"},
                    {"model_max_length", context}},
               files);
    write_json(dir / "special_tokens_map.json",
               json{{"unk_token", "[UNK]"},
                    {"sep_token", "[SEP]"},
                    {"pad_token", "[PAD]"},
                    {"cls_token", "[CLS]"},
                    {"mask_token", "[MASK]"}},
               files);
  } else {
    // A sentencepiece vocabulary has no Hugging Face BERT tokenizer; the .model is kept
    // beside the weights for the sentencepiece library (see the model card).
    const fs::path m = dir / b.tokenizer.filename();
    util::write_file_atomic(m, util::read_file(b.tokenizer));
    files.push_back(m);
  }
  return files;
}

// --- model card ----------------------------------------------------------------------

std::string metrics_table(const json& m) {
  std::string s = "| metric | value |\n| --- | --- |\n";
  for (auto it = m.begin(); it != m.end(); ++it)
    s += fmt::format("| {} | {} |\n", it.key(),
                     it.value().is_number() ? fmt::format("{:.4g}", it.value().get<double>())
                                            : it.value().dump());
  return s;
}

std::string use_section(ExportFormat f, const json& side) {
  const VisionDesc d = vision_desc(side);
  const int64_t e = d.embed;
  std::string s = "## Use\n\n```python\n";
  switch (f) {
    case ExportFormat::kRetclip:
      s += "# retclip itself: embed a manifest\n"
           "#   retclip embed --weights <this folder> --manifest patients.csv --out "
           "emb.safetensors\n"
           "# or start a run from it: model.init.full: <this folder>/full.safetensors\n";
      break;
    case ExportFormat::kOpenClip: {
      const std::string arch = open_clip_arch(d);
      s += "import open_clip\nfrom safetensors.torch import load_file\n";
      if (!arch.empty())
        s += fmt::format("model = open_clip.create_model(\"{}\")  # same tower\n", arch);
      else
        s += "model = open_clip.create_model(\"local-dir:<this folder>\", load_weights=False)\n";
      s += "model.visual.load_state_dict(load_file(\"<this folder>/visual.safetensors\"))\n"
           "features = model.visual(images)  # [B, " +
           std::to_string(e) + "]\n";
      break;
    }
    case ExportFormat::kTimm: {
      const std::string arch = timm_arch(d);
      s += "import timm\n"
           "model = timm.create_model(\"local-dir:<this folder>\", pretrained=True)\n"
           "# or, by name, then load_state_dict(strict=True):\n";
      s += fmt::format("#   timm.create_model(\"{}\", pretrained=False{})\n", timm_architecture(d),
                       arch.empty()
                           ? py_args(timm_model_args(d)) + fmt::format(", num_classes={}", e)
                           : fmt::format(", num_classes={}", e));
      s += "features = model(images)  # [B, " + std::to_string(e) +
           "]: head = the CLIP projection\n"
           "trunk = model.forward_head(model.forward_features(images), pre_logits=True)  # [B, " +
           std::to_string(d.width) +
           "]\n"
           "# fine-tuning (RETFound style): model.reset_classifier(num_classes)\n";
      break;
    }
    case ExportFormat::kHf:
      s += "from transformers import AutoModel, AutoTokenizer\n"
           "model = AutoModel.from_pretrained(\"<this folder>\", add_pooling_layer=False)\n";
      if (is_wordpiece(side))
        s += "tokenizer = AutoTokenizer.from_pretrained(\"<this folder>\")\n"
             "batch = tokenizer(reports, padding=\"max_length\", truncation=True, "
             "return_tensors=\"pt\")\n";
      s += "cls = model(**batch).last_hidden_state[:, 0]  # [B, " +
           std::to_string(side.at("text").at("hidden").get<int64_t>()) +
           "], retclip's text feature\n";
      break;
  }
  s += "```\n\n";
  if (f != ExportFormat::kRetclip) {
    s += "The RET-CLIP heads are in `retclip_heads.safetensors` (plain PyTorch, no retclip "
         "code needed):\n\n```python\nh = load_file(\"<this folder>/retclip_heads.safetensors\")\n";
    if (f == ExportFormat::kHf) {
      s += "def proj(x, p): return torch.relu(x @ h[p + \".0.weight\"].T + h[p + \".0.bias\"]) @ "
           "h[p + \".2.weight\"].T + h[p + \".2.bias\"]\n"
           "patient_txt = F.normalize(proj(cls, \"text_projection\"), dim=-1)  # also "
           "text_projection_left / _right\n";
    } else {
      s += std::string("left_img = F.normalize(") +
           (f == ExportFormat::kTimm ? "model(left)" : "model.visual(left)") +
           " @ h[\"left_feature_mapping.weight\"].T, dim=-1)  # right_feature_mapping likewise\n"
           "patient_img = F.normalize(torch.cat([f_left, f_right], 1) @ "
           "h[\"global_feature_mapping.weight\"].T, dim=-1)\n";
    }
    s += "```\n\n";
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------

const char* export_format_name(ExportFormat f) {
  switch (f) {
    case ExportFormat::kRetclip:
      return "retclip";
    case ExportFormat::kOpenClip:
      return "open_clip";
    case ExportFormat::kTimm:
      return "timm";
    case ExportFormat::kHf:
      return "hf";
  }
  return "unknown";
}

ExportFormat parse_export_format(const std::string& name) {
  for (auto f :
       {ExportFormat::kRetclip, ExportFormat::kOpenClip, ExportFormat::kTimm, ExportFormat::kHf})
    if (name == export_format_name(f)) return f;
  throw UsageError(str_cat("unknown export format '", name,
                           "': expected retclip, open_clip, timm or hf. HINT: --format "
                           "retclip,open_clip,timm,hf (any of them, comma-separated)"));
}

std::vector<ExportFormat> parse_export_formats(const std::string& list) {
  std::vector<ExportFormat> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) {
      const ExportFormat f = parse_export_format(item);
      if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
    }
    start = end + 1;
  }
  RETCLIP_CHECK_USAGE(!out.empty(),
                      "--format is empty: expected any of retclip, open_clip, timm, "
                      "hf. HINT: --format retclip");
  return out;
}

fs::path export_format_dir(ExportFormat f, const fs::path& out_dir) {
  return f == ExportFormat::kRetclip ? out_dir : out_dir / export_format_name(f);
}

std::vector<fs::path> write_export_format(ExportFormat f, const ExportBundle& b,
                                          const fs::path& out_dir) {
  const fs::path dir = export_format_dir(f, out_dir);
  fs::create_directories(dir);
  std::vector<fs::path> files;
  switch (f) {
    case ExportFormat::kRetclip:
      files = write_retclip(b, dir);
      break;
    case ExportFormat::kOpenClip:
      files = write_open_clip(b, dir);
      break;
    case ExportFormat::kTimm:
      files = write_timm(b, dir);
      break;
    case ExportFormat::kHf:
      files = write_hf(b, dir);
      break;
  }
  const fs::path card = dir / "README.md";
  util::write_file_atomic(card, model_card(f, b.sidecar));
  files.push_back(card);
  return files;
}

std::string model_card(ExportFormat f, const json& side) {
  const VisionDesc d = vision_desc(side);
  const json& t = side.at("text");
  const json& tok = side.at("tokenizer");
  const json& pre = side.at("preprocessing");
  const bool vision = f != ExportFormat::kHf;
  const bool text = f == ExportFormat::kHf || f == ExportFormat::kRetclip;
  const char* library = f == ExportFormat::kOpenClip ? "open_clip"
                        : f == ExportFormat::kTimm   ? "timm"
                        : f == ExportFormat::kHf     ? "transformers"
                                                     : "retclip";
  std::string s = fmt::format(
      "---\nlibrary_name: {}\ntags:\n- retclip\n- ret-clip\n- retina\n- fundus\n- clip\n"
      "pipeline_tag: {}\n---\n\n",
      library, f == ExportFormat::kHf ? "feature-extraction" : "image-feature-extraction");
  s += fmt::format("# retclip {} encoder ({} format)\n\n",
                   f == ExportFormat::kRetclip ? "image and text"
                   : vision                    ? "image"
                                               : "text",
                   export_format_name(f));
  s += fmt::format(
      "Exported by retclip {} (git {}) from step {} of a RET-CLIP-style pretraining run: a ViT "
      "image encoder shared by both eyes and a BERT text encoder trained with the tripartite "
      "(patient, left eye, right eye) contrastive loss on colour fundus photographs and their "
      "reports.\n\n",
      side.value("retclip_version", kVersion), side.value("git_hash", kGitHash),
      side.value("step", int64_t{0}));
  s += "## Model\n\n| | |\n| --- | --- |\n";
  if (vision)
    s += fmt::format(
        "| image tower | {} (ViT, patch {}, width {}, {} layers, {} heads, mlp ratio {}, "
        "QuickGELU, "
        "pre-LN; output: ln_post(CLS) @ proj) |\n",
        side.at("vision").value("preset", ""), d.patch, d.width, d.layers, d.heads, d.mlp_ratio);
  if (text)
    s += fmt::format(
        "| text tower | {} (BERT, vocab {}, hidden {}, {} layers, {} heads, ffn {}, max position "
        "{}; post-LN, exact GELU, no pooler; output: hidden state of [CLS]) |\n",
        t.value("preset", ""), t.at("vocab_size").get<int64_t>(), t.at("hidden").get<int64_t>(),
        t.at("layers").get<int64_t>(), t.at("heads").get<int64_t>(),
        t.at("intermediate").get<int64_t>(), t.at("max_position").get<int64_t>());
  s += fmt::format("| joint embedding | {} (L2-normalised) |\n\n", d.embed);
  if (vision)
    s += fmt::format(
        "## Preprocessing\n\n1. Fundus crop: {}.\n2. Resize to {} x {} px ({}).\n3. RGB, scale to "
        "[0, 1], normalise with mean {} and std {}.\n\n",
        pre.value("fundus_crop", ""), d.image, d.image, pre.value("resize", ""),
        fmt_list(pre.at("mean")), fmt_list(pre.at("std")));
  if (text)
    s += fmt::format(
        "## Tokenizer\n\n{} (`{}`), {}lower-cased; layout {}; context length {} tokens; pad id "
        "{}.{}\n\n",
        tok.value("type", ""), tok.value("file", ""), tok.value("lowercase", true) ? "" : "not ",
        tok.value("layout", ""), t.at("context_length").get<int64_t>(),
        t.at("pad_id").get<int64_t>(),
        f == ExportFormat::kHf && !is_wordpiece(side)
            ? " A sentencepiece model has no Hugging Face BERT tokenizer: encode with the "
              "`sentencepiece` library and add [CLS]/[SEP] as above."
            : "");
  s += "## Training\n\n";
  if (side.contains("training")) {
    const json& tr = side.at("training");
    s += fmt::format("- data: {}\n", tr.value("data", "(not recorded)"));
    if (tr.contains("val") && !tr.at("val").get<std::string>().empty())
      s += fmt::format("- held-out data: {}\n", tr.at("val").get<std::string>());
    s += fmt::format("- steps: {}", side.value("step", int64_t{0}));
    if (tr.contains("batch_size"))
      s += fmt::format(", batch {} patients per rank", tr.at("batch_size").get<int64_t>());
    if (tr.contains("lr")) s += fmt::format(", lr {}", tr.at("lr").get<double>());
    s += "\n\n";
    if (tr.contains("held_out") && !tr.at("held_out").empty()) {
      s += fmt::format("### Held-out metrics (step {})\n\n",
                       tr.value("held_out_step", side.value("step", int64_t{0})));
      s += metrics_table(tr.at("held_out")) + "\n";
    }
    if (tr.contains("probe") && !tr.at("probe").empty())
      s += "### Probe results\n\n" + metrics_table(tr.at("probe")) + "\n";
  } else {
    s += fmt::format("- steps: {}\n\n", side.value("step", int64_t{0}));
  }
  s += use_section(f, side);
  s += "Key names and file layouts: retclip's docs/WEIGHTS.md.\n";
  return s;
}

// ---------------------------------------------------------------------------------

StateDict to_open_clip_visual(const StateDict& sd) {
  return strip_prefix(filter_prefix(sd, "visual."), "visual.");
}

StateDict to_timm_vit(const StateDict& sd) {
  StateDict out;
  for (const auto& [key, v] : sd) {
    if (!starts_with(key, "visual.")) continue;
    std::string k = key.substr(7);
    if (k == "class_embedding") {
      out.emplace_back("cls_token", v.reshape({1, 1, -1}));
    } else if (k == "positional_embedding") {
      out.emplace_back("pos_embed", v.unsqueeze(0));
    } else if (k == "proj") {
      out.emplace_back("head.weight", v.t().contiguous());
      out.emplace_back("head.bias", at::zeros({v.size(1)}, v.options()));
    } else if (starts_with(k, "transformer.resblocks.")) {
      k = "blocks." + k.substr(22);
      for (const auto& [from, to] : block_renames()) k = replace_once(k, from, to);
      out.emplace_back(k, v);
    } else {
      for (const auto& [from, to] : stem_renames())
        if (k == from) k = to;
      out.emplace_back(k, v);
    }
  }
  return out;
}

bool is_timm_vit(const StateDict& sd) {
  return find_tensor(sd, "patch_embed.proj.weight") != nullptr && find_tensor(sd, "cls_token");
}

StateDict map_timm_vit(const StateDict& sd) {
  const std::string hint =
      "HINT: retclip's ViT is CLIP's (pre-norm, no patch bias, class token, QuickGELU); use a "
      "timm vit_*_clip_* checkpoint or a retclip timm export";
  for (const char* bad :
       {"patch_embed.proj.bias", "fc_norm.weight", "attn_pool.latent", "reg_token"})
    RETCLIP_CHECK_USAGE(find_tensor(sd, bad) == nullptr, "timm ViT checkpoint has '", bad,
                        "', which retclip's ViT does not compute. ", hint);
  RETCLIP_CHECK_USAGE(find_tensor(sd, "norm_pre.weight") != nullptr,
                      "timm ViT checkpoint has no norm_pre (a plain, non-CLIP ViT). ", hint);
  StateDict out;
  for (const auto& [k, v] : sd) {
    if (k == "cls_token") {
      out.emplace_back("visual.class_embedding", v.reshape({-1}));
    } else if (k == "pos_embed") {
      out.emplace_back("visual.positional_embedding", v.reshape({v.size(-2), v.size(-1)}));
    } else if (k == "head.weight") {
      out.emplace_back("visual.proj", v.t().contiguous());
    } else if (k == "head.bias") {
      RETCLIP_CHECK_USAGE(v.eq(0).all().item<bool>(),
                          "timm ViT checkpoint: head.bias is not zero, but retclip's projection "
                          "(visual.proj) has no bias. HINT: export the trunk with num_classes=0 "
                          "or use the CLIP projection as head");
    } else if (starts_with(k, "blocks.")) {
      std::string r = "transformer.resblocks." + k.substr(7);
      for (const auto& [clip, timm] : block_renames()) r = replace_once(r, timm, clip);
      out.emplace_back("visual." + r, v);
    } else {
      std::string r = k;
      for (const auto& [clip, timm] : stem_renames())
        if (k == timm) r = clip;
      RETCLIP_CHECK_USAGE(r != k, "timm ViT checkpoint: key '", k,
                          "' has no counterpart in retclip's ViT. ", hint);
      out.emplace_back("visual." + r, v);
    }
  }
  return out;
}

StateDict to_hf_bert(const StateDict& sd) {
  return strip_prefix(filter_prefix(sd, "bert."), "bert.");
}

StateDict retclip_heads(const StateDict& sd) {
  StateDict out;
  for (const auto& [k, v] : sd)
    if (is_head_key(k)) out.emplace_back(k, v);
  return out;
}

// ---------------------------------------------------------------------------------

BertSizes read_hf_bert_config(const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / "config.json" : path;
  RETCLIP_CHECK_USAGE(fs::exists(file), file.string(),
                      " does not exist: model.text.preset=hf reads the tower's sizes from the "
                      "Hugging Face folder's config.json. HINT: point model.init.text at the "
                      "folder holding config.json and model.safetensors");
  const json j = open_json(file);
  const std::string where = file.string();
  auto get = [&](const char* key) -> int64_t {
    RETCLIP_CHECK_USAGE(j.contains(key) && j[key].is_number_integer(), where,
                        ": expected an integer \"", key,
                        "\" (a BERT config.json). HINT: model.text.preset=hf needs a BertModel "
                        "config; for other towers use a named preset");
    return j[key].get<int64_t>();
  };
  BertSizes s;
  s.vocab_size = get("vocab_size");
  s.hidden = get("hidden_size");
  s.layers = get("num_hidden_layers");
  s.heads = get("num_attention_heads");
  s.intermediate = get("intermediate_size");
  s.max_position = get("max_position_embeddings");
  if (j.contains("type_vocab_size")) s.type_vocab_size = get("type_vocab_size");
  if (j.contains("pad_token_id") && j["pad_token_id"].is_number_integer())
    s.pad_id = get("pad_token_id");
  if (j.contains("layer_norm_eps")) s.layer_norm_eps = j["layer_norm_eps"].get<double>();
  const std::string act = j.value("hidden_act", "gelu");
  RETCLIP_CHECK_USAGE(act == "gelu", where, ": hidden_act is \"", act,
                      "\" but retclip's BERT computes exact (erf) GELU, \"gelu\". HINT: this "
                      "checkpoint cannot be loaded as model.init.text");
  const std::string pos = j.value("position_embedding_type", "absolute");
  RETCLIP_CHECK_USAGE(pos == "absolute", where, ": position_embedding_type is \"", pos,
                      "\" but retclip's BERT has absolute position embeddings. HINT: this "
                      "checkpoint cannot be loaded as model.init.text");
  RETCLIP_CHECK_USAGE(s.type_vocab_size == 2, where, ": type_vocab_size is ", s.type_vocab_size,
                      " but retclip's BERT has 2 token types. HINT: this checkpoint cannot be "
                      "loaded as model.init.text");
  RETCLIP_CHECK_USAGE(std::abs(s.layer_norm_eps - 1e-12) <= 1e-15, where, ": layer_norm_eps is ",
                      s.layer_norm_eps,
                      " but retclip's BERT uses 1e-12. HINT: this checkpoint "
                      "cannot be loaded as model.init.text");
  RETCLIP_CHECK_USAGE(s.pad_id == 0, where, ": pad_token_id is ", s.pad_id,
                      " but retclip's BERT masks id 0. HINT: this checkpoint cannot be loaded as "
                      "model.init.text");
  return s;
}

VisionSizes vision_sizes_from_weights(const StateDict& sd, const std::string& where) {
  const at::Tensor* conv = find_tensor(sd, "visual.conv1.weight");
  const at::Tensor* pe = find_tensor(sd, "visual.positional_embedding");
  RETCLIP_CHECK_USAGE(conv && conv->dim() == 4 && pe && pe->dim() == 2, where,
                      ": expected visual.conv1.weight [D,3,P,P] and visual.positional_embedding "
                      "[1+g*g,D] to read the ViT's sizes. HINT: model.vision.preset=checkpoint "
                      "needs a CLIP ViT checkpoint (OpenAI/OpenCLIP, timm vit_*_clip_*, retclip)");
  VisionSizes v;
  v.width = conv->size(0);
  v.patch_size = conv->size(2);
  const int64_t n = pe->size(0) - 1;
  const auto g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  RETCLIP_CHECK_USAGE(g * g == n, where, ": visual.positional_embedding has ", pe->size(0),
                      " rows, not 1 + a square patch grid. HINT: only square grids with one "
                      "class token are supported");
  v.image_size = g * v.patch_size;
  std::set<int64_t> blocks;
  for (const auto& [k, t] : sd) {
    const std::string p = "visual.transformer.resblocks.";
    if (starts_with(k, p))
      blocks.insert(std::stoll(k.substr(p.size(), k.find('.', p.size()) - p.size())));
  }
  v.layers = static_cast<int64_t>(blocks.size());
  RETCLIP_CHECK_USAGE(v.layers > 0, where, ": no visual.transformer.resblocks.* tensors");
  if (const at::Tensor* fc = find_tensor(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight"))
    v.mlp_ratio = static_cast<double>(fc->size(0)) / static_cast<double>(v.width);
  v.heads = v.width / 64 > 0 ? v.width / 64 : 1;
  if (const at::Tensor* proj = find_tensor(sd, "visual.proj")) v.embed_dim = proj->size(1);
  return v;
}

void resolve_pretrained_presets(config::ModelConfig& m) {
  if (m.text.preset == "hf") {
    RETCLIP_CHECK_USAGE(!m.init.text.empty(),
                        "model.text.preset=hf reads the text tower's sizes from model.init.text, "
                        "which is empty. HINT: set model.init.text to a Hugging Face BERT folder "
                        "(config.json + model.safetensors)");
    fs::path p(m.init.text);
    const BertSizes s = read_hf_bert_config(fs::is_directory(p) ? p : p.parent_path());
    auto fill = [](int64_t& field, int64_t v) {
      if (field == 0) field = v;
    };
    fill(m.text.vocab_size, s.vocab_size);
    fill(m.text.hidden, s.hidden);
    fill(m.text.layers, s.layers);
    fill(m.text.heads, s.heads);
    fill(m.text.intermediate, s.intermediate);
    fill(m.text.max_position, s.max_position);
    log::debug("model.text.preset=hf: sizes from {}", m.init.text);
  }
  if (m.vision.preset == "checkpoint") {
    RETCLIP_CHECK_USAGE(!m.init.vision.empty(),
                        "model.vision.preset=checkpoint reads the ViT's sizes from "
                        "model.init.vision, which is empty. HINT: set model.init.vision to a CLIP "
                        "ViT checkpoint, or use a named preset such as ViT-B-16");
    const StateDict sd = map_openai_clip_visual(load_weights(m.init.vision));
    const VisionSizes v = vision_sizes_from_weights(sd, m.init.vision);
    auto fill = [](auto& field, auto value) {
      if (field == 0) field = value;
    };
    fill(m.vision.image_size, v.image_size);
    fill(m.vision.patch_size, v.patch_size);
    fill(m.vision.width, v.width);
    fill(m.vision.layers, v.layers);
    fill(m.vision.heads, v.heads);
    fill(m.vision.mlp_ratio, v.mlp_ratio);
    if (v.embed_dim > 0) fill(m.embed_dim, v.embed_dim);
    RETCLIP_CHECK_USAGE(m.embed_dim > 0, m.init.vision,
                        " has no projection (visual.proj / head.weight), so the embed size is "
                        "unknown. HINT: set model.embed_dim");
  }
}

}  // namespace retclip::io
