// Export formats other libraries load as their own (open_clip, timm, Hugging Face),
// their key maps, model cards, and the sizes of pretrained towers read from their
// files for the "hf" and "checkpoint" presets.
#include "retclip/io/interop.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>

#include "retclip/io/hf_tokenizer.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/strings.hpp"
#include "retclip/version.hpp"

namespace retclip::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using util::starts_with;
using util::ends_with;

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
      {".mlp.c_proj.", ".mlp.fc2."},
      {".ls_1.gamma", ".ls1.gamma"},
      {".ls_2.gamma", ".ls2.gamma"}};
  return r;
}

const std::vector<std::pair<std::string, std::string>>& stem_renames() {
  static const std::vector<std::pair<std::string, std::string>> r{
      {"conv1.weight", "patch_embed.proj.weight"}, {"conv1.bias", "patch_embed.proj.bias"},
      {"ln_pre.weight", "norm_pre.weight"},        {"ln_pre.bias", "norm_pre.bias"},
      {"ln_post.weight", "norm.weight"},           {"ln_post.bias", "norm.bias"},
      {"fc_norm.weight", "fc_norm.weight"},        {"fc_norm.bias", "fc_norm.bias"}};
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
  // The architecture (retclip.json's vision record; CLIP's when an older export has none).
  std::string activation = "quick_gelu", pool = "token";
  bool patch_bias = false, norm_pre = true, class_token = true, pos_embed_prefix = true;
  bool fc_norm = false, qkv_bias = true;
  int64_t register_tokens = 0;
  double layer_scale = 0, norm_eps = 1e-5;
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
  d.activation = v.value("activation", d.activation);
  d.pool = v.value("pool", d.pool);
  d.patch_bias = v.value("patch_bias", d.patch_bias);
  d.norm_pre = v.value("norm_pre", d.norm_pre);
  d.class_token = v.value("class_token", d.class_token);
  d.pos_embed_prefix = v.value("pos_embed_prefix", d.pos_embed_prefix);
  d.fc_norm = v.value("fc_norm", d.fc_norm);
  d.qkv_bias = v.value("qkv_bias", d.qkv_bias);
  d.register_tokens = v.value("register_tokens", d.register_tokens);
  d.layer_scale = v.value("layer_scale", d.layer_scale);
  d.norm_eps = v.value("norm_eps", d.norm_eps);
  return d;
}

bool is_eps(double a, double b) {
  return std::abs(a - b) <= b * 1e-6;
}

// timm's registered ViT with this tower, "" when none matches (then the base architecture
// of the family with every size in model_args builds it). Sizes: timm's tiny .. huge.
std::string timm_arch(const VisionDesc& d) {
  static const std::set<std::string> registered{"vit_tiny_patch16_224",
                                                "vit_tiny_patch16_384",
                                                "vit_small_patch8_224",
                                                "vit_small_patch14_dinov2",
                                                "vit_small_patch14_reg4_dinov2",
                                                "vit_small_patch16_224",
                                                "vit_small_patch16_384",
                                                "vit_small_patch32_224",
                                                "vit_small_patch32_384",
                                                "vit_base_patch8_224",
                                                "vit_base_patch14_dinov2",
                                                "vit_base_patch14_reg4_dinov2",
                                                "vit_base_patch16_224",
                                                "vit_base_patch16_clip_224",
                                                "vit_base_patch16_clip_quickgelu_224",
                                                "vit_base_patch16_384",
                                                "vit_base_patch16_clip_384",
                                                "vit_base_patch32_224",
                                                "vit_base_patch32_clip_224",
                                                "vit_base_patch32_clip_quickgelu_224",
                                                "vit_base_patch32_384",
                                                "vit_base_patch32_clip_384",
                                                "vit_large_patch14_224",
                                                "vit_large_patch14_clip_224",
                                                "vit_large_patch14_clip_quickgelu_224",
                                                "vit_large_patch14_dinov2",
                                                "vit_large_patch14_reg4_dinov2",
                                                "vit_large_patch16_224",
                                                "vit_large_patch16_384",
                                                "vit_large_patch32_224",
                                                "vit_large_patch32_384",
                                                "vit_huge_patch14_224",
                                                "vit_huge_patch14_clip_224",
                                                "vit_huge_patch14_clip_quickgelu_224"};
  if (d.mlp_ratio != 4.0 || !d.qkv_bias || !d.class_token) return "";
  std::string size;
  for (const auto& [n, w, l, h] :
       std::vector<std::tuple<const char*, int64_t, int64_t, int64_t>>{{"tiny", 192, 12, 3},
                                                                       {"small", 384, 12, 6},
                                                                       {"base", 768, 12, 12},
                                                                       {"large", 1024, 24, 16},
                                                                       {"huge", 1280, 32, 16}})
    if (d.width == w && d.layers == l && d.heads == h) size = n;
  if (size.empty()) return "";
  const std::string stem = fmt::format("vit_{}_patch{}", size, d.patch);
  const std::string img = d.image == 384 ? "384" : "224";
  std::string name;
  if (d.norm_pre && is_eps(d.norm_eps, 1e-5) && d.register_tokens == 0 && d.layer_scale == 0 &&
      d.pos_embed_prefix)  // CLIP
    name = d.activation == "quick_gelu" ? stem + "_clip_quickgelu_224" : stem + "_clip_" + img;
  else if (!d.norm_pre && is_eps(d.norm_eps, 1e-6) && d.activation == "gelu" &&
           d.layer_scale > 0)  // DINOv2
    name = d.register_tokens == 0 && d.pos_embed_prefix    ? stem + "_dinov2"
           : d.register_tokens == 4 && !d.pos_embed_prefix ? stem + "_reg4_dinov2"
                                                           : "";
  else if (!d.norm_pre && is_eps(d.norm_eps, 1e-6) && d.activation == "gelu" &&
           d.register_tokens == 0 && d.pos_embed_prefix)  // the original ViT, MAE / RETFound
    name = stem + "_" + img;
  return registered.count(name) ? name : "";
}

// The architecture the timm folder names: the matching one, else the base ViT of the
// family whose LayerNorm eps the tower has (timm's CLIP ViTs 1e-5, the others 1e-6),
// every size and option given in model_args.
std::string timm_architecture(const VisionDesc& d) {
  const std::string a = timm_arch(d);
  if (!a.empty()) return a;
  return is_eps(d.norm_eps, 1e-5) ? "vit_base_patch16_clip_quickgelu_224" : "vit_base_patch16_224";
}

json timm_model_args(const VisionDesc& d) {
  json a{{"img_size", d.image},    {"patch_size", d.patch},    {"embed_dim", d.width},
         {"depth", d.layers},      {"num_heads", d.heads},     {"mlp_ratio", d.mlp_ratio},
         {"pre_norm", d.norm_pre}, {"act_layer", d.activation}};
  // Beyond CLIP's: written only when they differ from timm's defaults, so a CLIP export's
  // config.json stays as it was.
  if (!d.qkv_bias) a["qkv_bias"] = false;
  if (!d.class_token) a["class_token"] = false;
  if (d.register_tokens > 0) a["reg_tokens"] = d.register_tokens;
  if (!d.pos_embed_prefix) a["no_embed_class"] = true;
  if (d.layer_scale > 0) a["init_values"] = d.layer_scale;
  if (d.pool != "token") {
    a["global_pool"] = d.pool;
    a["fc_norm"] = d.fc_norm;
  } else if (d.fc_norm) {
    a["fc_norm"] = true;
  }
  return a;
}

// What timm's VisionTransformer cannot build from model_args; "" when it can.
std::string timm_refusal(const VisionDesc& d) {
  if (d.patch_bias == d.norm_pre)
    return fmt::format(
        "the tower has {} patch-embedding bias with{} ln_pre, but timm's VisionTransformer "
        "has one exactly when it has no pre-norm (patch_embed bias = not pre_norm)",
        d.patch_bias ? "a" : "no", d.norm_pre ? "" : "out");
  if (!is_eps(d.norm_eps, 1e-5) && !is_eps(d.norm_eps, 1e-6))
    return fmt::format(
        "its LayerNorm eps is {}, but timm's ViT architectures use 1e-5 (CLIP) or 1e-6",
        d.norm_eps);
  return "";
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

// data.tokenizer.map_quotes of the run: the sidecar's tokenizer record, else its config.
bool map_quotes_of(const json& side) {
  const json& tok = side.at("tokenizer");
  if (tok.contains("map_quotes")) return tok.at("map_quotes").get<bool>();
  if (side.contains("config") && side.at("config").is_string())
    return config::load_string(side.at("config").get<std::string>(), "retclip.json")
        .data.tokenizer.map_quotes;
  return false;
}

// The run's tokenizer as the Hugging Face tokenizer files are written from it.
HfTokenizerSource tokenizer_source(const ExportBundle& b, ExportFormat f) {
  RETCLIP_CHECK_USAGE(!b.tokenizer.empty() && fs::exists(b.tokenizer), "export --format ",
                      export_format_name(f), ": the run's tokenizer file (",
                      b.tokenizer.empty() ? std::string("none recorded") : b.tokenizer.string(),
                      ") is needed beside the text tower but was not found. HINT: keep "
                      "data.tokenizer.path of the run readable, or export --format retclip");
  const json& tok = b.sidecar.at("tokenizer");
  HfTokenizerSource s;
  s.type = tok.value("type", "");
  s.file = b.tokenizer;
  s.lowercase = tok.value("lowercase", true);
  s.map_quotes = map_quotes_of(b.sidecar);
  s.context_length = b.sidecar.at("text").at("context_length").get<int64_t>();
  return s;
}

// Hugging Face BertModel config.json of the text tower.
json bert_config(const json& t) {
  return json{{"architectures", {"BertModel"}},
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
              {"torch_dtype", "float32"}};
}

const at::Tensor& need(const StateDict& sd, const std::string& key, const char* what) {
  const at::Tensor* t = find_tensor(sd, key);
  RETCLIP_CHECK_USAGE(t != nullptr, "export --format open_clip: the checkpoint has no ", key, " (",
                      what, "). HINT: export from a full retclip checkpoint (--checkpoint)");
  return *t;
}

}  // namespace

OpenClipTextHead open_clip_text_head(const StateDict& sd, int64_t out_dim) {
  // Dimension legend: H text width, E embed size, M = (H + out_dim) / 2 open_clip's
  // MLP width. retclip: t = W2 relu(W0 x + b0) + b2, x the [CLS] state, which is the
  // output of the last LayerNorm, x = g * n + b with sum(n) = 0. open_clip: t' =
  // B gelu(A tanh(P x + c)), no biases after the pooler. The rewrite, exact up to fp32
  // rounding:
  //  - the pooler passes x through linearly, tanh(eps x_k) = eps x_k (eps^3 x^3 / 3 is
  //    below rounding), except row m, whose bias saturates tanh to the constant 1;
  //  - x_m is not lost: sum(n) = 0 gives x_m = b_m - g_m sum_{k!=m} (x_k - b_k) / g_k;
  //    m is the smallest |g|, so every factor g_m / g_k is at most 1 in size;
  //  - A rebuilds s * (W0 x + b0) from them (the bias from the constant), GELU of values
  //    scaled by s = 1e6 is ReLU (|error| <= 0.17 / s), one more unit carries the
  //    constant K for b2, and B = [W2 / s, b2 / K], zero rows beyond E.
  const int64_t h = need(sd, "text_projection.0.weight", "the patient text projection").size(1);
  int64_t layers = 0;
  for (const auto& [k, v] : sd)
    if (starts_with(k, "bert.encoder.layer.")) {
      const size_t at = std::string("bert.encoder.layer.").size();
      layers = std::max<int64_t>(layers, std::stoll(k.substr(at, k.find('.', at) - at)) + 1);
    }
  const std::string ln = "bert.encoder.layer." + std::to_string(layers - 1) + ".output.LayerNorm.";
  auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const at::Tensor g = d(need(sd, ln + "weight", "the text tower's last LayerNorm"));
  const at::Tensor beta = d(need(sd, ln + "bias", "the text tower's last LayerNorm"));
  const at::Tensor w0 = d(need(sd, "text_projection.0.weight", "the patient text projection"));
  const at::Tensor b0 = d(need(sd, "text_projection.0.bias", "the patient text projection"));
  const at::Tensor w2 = d(need(sd, "text_projection.2.weight", "the patient text projection"));
  const at::Tensor b2 = d(need(sd, "text_projection.2.bias", "the patient text projection"));
  const int64_t e = w2.size(0);
  RETCLIP_CHECK(out_dim >= std::max<int64_t>(e, h + 2), "open_clip text head: out_dim ", out_dim,
                " must be at least max(E, H + 2) = ", std::max<int64_t>(e, h + 2));
  const int64_t mlp = (h + out_dim) / 2;
  const at::Tensor sorted = std::get<0>(g.abs().sort());
  RETCLIP_CHECK_USAGE(sorted[1].item<double>() > 0, "export --format open_clip: ", ln,
                      "weight has more than one zero entry, so the [CLS] state cannot be "
                      "recovered from open_clip's pooler. HINT: export --format hf and apply "
                      "text_projection from retclip_heads.safetensors");
  const int64_t m = g.abs().argmin().item<int64_t>();
  constexpr double kEps = 1e-6, kScale = 1e6, kConst = 1e3, kSaturate = 20.0;
  const double gm = g[m].item<double>();
  at::Tensor ratio = gm / g;  // g_m / g_k
  ratio[m] = 0;
  at::Tensor inv = beta / g;  // b_k / g_k
  inv[m] = 0;
  at::Tensor coef = w0 - w0.select(1, m).unsqueeze(1) * ratio.unsqueeze(0);  // [H,H]
  coef.select(1, m).zero_();
  const at::Tensor bias =
      b0 + w0.select(1, m) * (beta[m].item<double>() + gm * inv.sum().item<double>());  // [H]
  at::Tensor pw = at::eye(h, at::kDouble) * kEps;
  pw[m][m] = 0;
  at::Tensor pb = at::zeros({h}, at::kDouble);
  pb[m] = kSaturate;
  at::Tensor a = at::zeros({mlp, h}, at::kDouble);
  a.slice(0, 0, h).copy_(coef * (kScale / kEps));
  a.slice(0, 0, h).select(1, m).copy_(bias * kScale);
  a[h][m] = kConst;
  at::Tensor bm = at::zeros({out_dim, mlp}, at::kDouble);
  bm.slice(0, 0, e).slice(1, 0, h).copy_(w2 / kScale);
  bm.slice(0, 0, e).select(1, h).copy_(b2 / kConst);
  OpenClipTextHead out{pw.to(at::kFloat), pb.to(at::kFloat), a.to(at::kFloat),
                       bm.to(at::kFloat), 0.0};

  // Both heads on [CLS]-like states (LayerNorm outputs with this g and b), in fp32 as
  // open_clip runs them.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(20240521);
  const at::Tensor raw = at::randn({512, h}, gen, at::kFloat) * 4 + 1;
  const at::Tensor x =
      at::layer_norm(raw, {h}, g.to(at::kFloat), beta.to(at::kFloat), 1e-12);
  auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
  const at::Tensor want =
      at::relu(at::linear(x, f(w0), f(b0))).matmul(f(w2).t()) + f(b2);
  const at::Tensor got =
      at::gelu(at::linear(at::tanh(at::linear(x, out.pooler_weight, out.pooler_bias)),
                          out.proj0_weight))
          .matmul(out.proj2_weight.t());
  auto l2 = [](const at::Tensor& t) { return t / t.norm(2, -1, true); };
  out.max_diff = (l2(got).slice(1, 0, e) - l2(want)).abs().max().item<double>();
  // Dimensions beyond E (when H + 2 > E) carry nothing.
  const at::Tensor beyond = got.slice(1, e);
  RETCLIP_CHECK(out.max_diff <= 1e-5 && (beyond.numel() == 0 || beyond.abs().max().item<double>() == 0.0),
                "open_clip text head: the rewritten projection differs from text_projection by ",
                out.max_diff, " on LayerNorm outputs (tolerance 1e-5)");
  return out;
}

namespace {

std::vector<fs::path> write_open_clip(const ExportBundle& b, const fs::path& dir,
                                      const fs::path& final_dir) {
  std::vector<fs::path> files;
  const VisionDesc d = vision_desc(b.sidecar);
  const json& t = b.sidecar.at("text");
  const int64_t h = t.at("hidden").get<int64_t>();
  // open_clip's text MLP is (H + E') / 2 wide and needs H + 1 units: the joint space is
  // widened to E' with zero dimensions where E < H + 2 (cosines unchanged).
  const int64_t out_dim = std::max<int64_t>(d.embed, h + 2);
  const OpenClipTextHead head = open_clip_text_head(b.weights, out_dim);

  // Vision: encode_image is retclip's patient embedding of a patient with this one eye
  // (the missing eye takes the present one's features), so the patient mapping
  // W = [W_l | W_r] folds into the projection: proj' = proj (W_l + W_r)^T.
  StateDict oc;
  const at::Tensor wg = need(b.weights, "global_feature_mapping.weight", "the patient mapping")
                            .to(at::kDouble);
  for (auto& [k, v] : to_open_clip_visual(require_prefix(b.weights, "visual.", "vision"))) {
    if (k != "proj") {
      oc.emplace_back("visual." + k, v);
      continue;
    }
    const int64_t e = v.size(1);
    const at::Tensor folded = v.to(at::kDouble).matmul((wg.slice(1, 0, e) + wg.slice(1, e)).t());
    at::Tensor proj = at::zeros({v.size(0), out_dim}, at::kDouble);
    proj.slice(1, 0, e).copy_(folded);
    oc.emplace_back("visual.proj", proj.to(v.scalar_type()));
  }
  for (auto& [k, v] : to_hf_bert(require_prefix(b.weights, "bert.", "text")))
    oc.emplace_back("text.transformer." + k, v);
  oc.emplace_back("text.transformer.pooler.dense.weight", head.pooler_weight);
  oc.emplace_back("text.transformer.pooler.dense.bias", head.pooler_bias);
  oc.emplace_back("text.proj.0.weight", head.proj0_weight);
  oc.emplace_back("text.proj.2.weight", head.proj2_weight);
  oc.emplace_back("logit_scale", need(b.weights, "logit_scale", "the patient logit scale"));
  log::info("export: open_clip text head rewritten exactly (max |diff| {:.2e} on test states)",
            head.max_diff);

  const HfTokenizerSource tok = tokenizer_source(b, ExportFormat::kOpenClip);
  check_hf_tokenizer(tok);
  write_st(dir / "open_clip_model.safetensors", oc, "pt", files);
  // What open_clip does not load (it reads only *.safetensors at the top level): the
  // RET-CLIP heads and the unfolded projection, for the per-eye embeddings.
  fs::create_directories(dir / "retclip");
  StateDict heads = retclip_heads(b.weights);
  heads.emplace_back("visual.proj", need(b.weights, "visual.proj", "the image projection"));
  write_st(dir / "retclip" / "retclip_heads.safetensors", heads, "retclip", files);
  // The BERT tower's config; open_clip builds the tower from it (weights from the file
  // above). The tokenizer files sit at the top level, where open_clip's get_tokenizer
  // looks for a local-dir model.
  fs::create_directories(dir / "text");
  write_json(dir / "text" / "config.json", bert_config(t), files);
  for (auto& p : write_hf_tokenizer(dir, tok)) files.push_back(std::move(p));

  json vision_cfg{{"image_size", d.image},
                  {"layers", d.layers},
                  {"width", d.width},
                  {"patch_size", d.patch},
                  {"head_width", d.width / d.heads},
                  {"mlp_ratio", d.mlp_ratio}};
  // hf_model_name is read by transformers relative to the working directory, so it is
  // the absolute path of text/ (edit it after moving the folder).
  const std::string text_dir = fs::absolute(final_dir / "text").lexically_normal().string();
  json text_cfg{{"hf_model_name", text_dir},
                {"hf_tokenizer_name", text_dir},
                {"hf_proj_type", "mlp"},
                {"hf_pooler_type", "cls_pooler"},
                {"context_length", t.at("context_length")},
                {"vocab_size", t.at("vocab_size")}};
  json model_cfg{{"embed_dim", out_dim},
                 {"quick_gelu", true},
                 {"vision_cfg", vision_cfg},
                 {"text_cfg", text_cfg}};
  const json& pre = b.sidecar.at("preprocessing");
  write_json(dir / "open_clip_config.json",
             json{{"model_cfg", model_cfg},
                  {"preprocess_cfg",
                   {{"mean", pre.at("mean")},
                    {"std", pre.at("std")},
                    {"size", d.image},
                    {"interpolation", "bicubic"},
                    {"resize_mode", "shortest"}}},
                  {"retclip",
                   {{"embed_dim", d.embed},
                    {"image_embedding", "patient_img of a patient with this one eye"},
                    {"text_embedding", "patient_txt"},
                    {"heads", "retclip/retclip_heads.safetensors"}}}},
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
  const HfTokenizerSource tok = tokenizer_source(b, ExportFormat::kHf);
  check_hf_tokenizer(tok);  // refused before any file is written
  write_st(dir / "model.safetensors", to_hf_bert(require_prefix(b.weights, "bert.", "text")), "pt",
           files);
  write_st(dir / "retclip_heads.safetensors", retclip_heads(b.weights), "retclip", files);
  write_json(dir / "config.json", bert_config(b.sidecar.at("text")), files);
  for (auto& p : write_hf_tokenizer(dir, tok)) files.push_back(std::move(p));
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
      const int64_t wide = std::max<int64_t>(e, side.at("text").at("hidden").get<int64_t>() + 2);
      s += "import open_clip, torch\n"
           "model, _, preprocess = open_clip.create_model_and_transforms(\"local-dir:<this "
           "folder>\")\n"
           "tokenizer = open_clip.get_tokenizer(\"local-dir:<this folder>\")\n"
           "model.eval()\n";
      s += fmt::format(
          "img = model.encode_image(preprocess(pil_image)[None], normalize=True)  # [1, {}]: "
          "patient_img of a patient with this one eye\n"
          "txt = model.encode_text(tokenizer([\"left eye: drusen.\"]), normalize=True)  # "
          "patient_txt\n"
          "probs = (model.logit_scale.exp() * img @ txt.T).softmax(dim=-1)  # zero-shot\n",
          wide);
      if (wide != e)
        s += fmt::format(
            "# the embeddings are {} wide for open_clip's text head; dimensions {}.. are zero, "
            "img[:, :{}] is retclip's\n",
            wide, e, e);
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
           "model = AutoModel.from_pretrained(\"<this folder>\", add_pooling_layer=False)\n"
           "tokenizer = AutoTokenizer.from_pretrained(\"<this folder>\")  # retclip's ids\n"
           "batch = tokenizer(reports, padding=\"max_length\", truncation=True, "
           "return_tensors=\"pt\")\n";
      s += "cls = model(**batch).last_hidden_state[:, 0]  # [B, " +
           std::to_string(side.at("text").at("hidden").get<int64_t>()) +
           "], retclip's text feature\n";
      break;
  }
  s += "```\n\n";
  if (f != ExportFormat::kRetclip) {
    const char* file = f == ExportFormat::kOpenClip ? "retclip/retclip_heads.safetensors"
                                                    : "retclip_heads.safetensors";
    s += fmt::format(
        "The RET-CLIP heads are in `{}` (plain PyTorch, no retclip code needed):\n\n```python\n"
        "import torch.nn.functional as F\nfrom safetensors.torch import load_file\n"
        "h = load_file(\"<this folder>/{}\")\n",
        file, file);
    if (f == ExportFormat::kHf) {
      s += "def proj(x, p): return torch.relu(x @ h[p + \".0.weight\"].T + h[p + \".0.bias\"]) @ "
           "h[p + \".2.weight\"].T + h[p + \".2.bias\"]\n"
           "patient_txt = F.normalize(proj(cls, \"text_projection\"), dim=-1)  # also "
           "text_projection_left / _right\n";
    } else if (f == ExportFormat::kOpenClip) {
      s += "import copy\n"
           "vit = copy.deepcopy(model.visual); vit.proj = torch.nn.Parameter(h[\"visual.proj\"])  "
           "# retclip's ViT features\n"
           "left_img = F.normalize(vit(left) @ h[\"left_feature_mapping.weight\"].T, dim=-1)  # "
           "right_feature_mapping likewise\n"
           "patient_img = F.normalize(torch.cat([vit(left), vit(right)], 1) @ "
           "h[\"global_feature_mapping.weight\"].T, dim=-1)\n";
    } else {
      s += "left_img = F.normalize(model(left) @ h[\"left_feature_mapping.weight\"].T, dim=-1)  "
           "# right_feature_mapping likewise\n"
           "patient_img = F.normalize(torch.cat([model(left), model(right)], 1) @ "
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

void check_export_format(ExportFormat f, const ExportBundle& b) {
  switch (f) {
    case ExportFormat::kRetclip:
      return;
    case ExportFormat::kTimm: {
      require_prefix(b.weights, "visual.", "vision");
      const std::string why = timm_refusal(vision_desc(b.sidecar));
      RETCLIP_CHECK_USAGE(why.empty(), "export --format timm: ", why,
                          ". HINT: export --format retclip (model.init.vision reads it back)");
      return;
    }
    case ExportFormat::kOpenClip: {
      require_prefix(b.weights, "visual.", "vision");
      const VisionDesc d = vision_desc(b.sidecar);
      const bool clip = !d.patch_bias && d.norm_pre && d.class_token && d.register_tokens == 0 &&
                        d.pos_embed_prefix && d.layer_scale == 0 && d.pool == "token" &&
                        !d.fc_norm && d.qkv_bias && is_eps(d.norm_eps, 1e-5) &&
                        d.activation == "quick_gelu";
      RETCLIP_CHECK_USAGE(clip,
                          "export --format open_clip writes CLIP's ViT (QuickGELU, ln_pre, no "
                          "patch bias, class token through ln_post), but this image tower has "
                          "timm's options (docs/WEIGHTS.md). HINT: export --format timm,hf for "
                          "the towers, or --format retclip");
      need(b.weights, "global_feature_mapping.weight", "the patient mapping");
      need(b.weights, "logit_scale", "the patient logit scale");
      open_clip_text_head(
          b.weights,
          std::max<int64_t>(d.embed, b.sidecar.at("text").at("hidden").get<int64_t>() + 2));
    }
      [[fallthrough]];
    case ExportFormat::kHf:
      require_prefix(b.weights, "bert.", "text");
      check_hf_tokenizer(tokenizer_source(b, f));
      return;
  }
}

std::vector<fs::path> write_export_format(ExportFormat f, const ExportBundle& b,
                                          const fs::path& out_dir) {
  check_export_format(f, b);
  const fs::path dir = export_format_dir(f, out_dir);
  fs::create_directories(dir);
  std::vector<fs::path> files;
  switch (f) {
    case ExportFormat::kRetclip:
      files = write_retclip(b, dir);
      break;
    case ExportFormat::kOpenClip:
      files = write_open_clip(
          b, dir,
          export_format_dir(f, b.final_out_dir.empty() ? out_dir : b.final_out_dir));
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
  const bool text = f != ExportFormat::kTimm;
  const char* library = f == ExportFormat::kOpenClip ? "open_clip"
                        : f == ExportFormat::kTimm   ? "timm"
                        : f == ExportFormat::kHf     ? "transformers"
                                                     : "retclip";
  std::string s = fmt::format(
      "---\nlibrary_name: {}\ntags:\n- retclip\n- ret-clip\n- retina\n- fundus\n- clip\n"
      "pipeline_tag: {}\n---\n\n",
      library, f == ExportFormat::kHf ? "feature-extraction" : "image-feature-extraction");
  s += fmt::format("# retclip {} encoder ({} format)\n\n",
                   vision && text ? "image and text"
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
        "{}{}{}, pre-LN blocks; output: {} @ proj) |\n",
        side.at("vision").value("preset", ""), d.patch, d.width, d.layers, d.heads, d.mlp_ratio,
        d.activation == "gelu" ? "GELU" : "QuickGELU",
        d.register_tokens > 0 ? fmt::format(", {} register tokens", d.register_tokens) : "",
        d.layer_scale > 0 ? ", layer scale" : "",
        d.pool == "token"
            ? (d.fc_norm ? "fc_norm(CLS)" : "ln_post(CLS)")
            : (d.fc_norm ? "fc_norm(mean of patch tokens)" : "mean of ln_post(patch tokens)"));
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
        f == ExportFormat::kRetclip
            ? ""
            : is_wordpiece(side)
                ? " The folder's vocab.txt and tokenizer_config.json give these ids."
                : " The folder's tokenizer.json (a Unigram model with the sentencepiece model's "
                  "pieces, scores and normaliser) gives these ids.");
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
    } else if (k == "register_embedding") {
      out.emplace_back("reg_token", v.unsqueeze(0));
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
  return (find_tensor(sd, "patch_embed.proj.weight") != nullptr && find_tensor(sd, "pos_embed")) ||
         (find_tensor(sd, "backbone.patch_embed.proj.weight") != nullptr &&
          find_tensor(sd, "backbone.pos_embed"));
}

namespace {

// Keys of a timm / MAE / DINOv2 checkpoint that are not part of the image tower: the MAE
// decoder, the mask token, the DINO heads, a classifier of another task.
bool is_unused_timm_key(const std::string& k) {
  return starts_with(k, "decoder_") || starts_with(k, "decoder.") || k == "mask_token" ||
         starts_with(k, "head.") || starts_with(k, "dino_head.") || starts_with(k, "ibot_head.");
}

// `transformer.resblocks.{i}.<one of the block's tensors>`.
bool is_vit_block_key(const std::string& r) {
  const size_t dot = r.find('.', 22);
  if (dot == std::string::npos) return false;
  static const std::set<std::string> known{
      "ln_1.weight",          "ln_1.bias",          "attn.in_proj_weight", "attn.in_proj_bias",
      "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight",         "ln_2.bias",
      "mlp.c_fc.weight",      "mlp.c_fc.bias",      "mlp.c_proj.weight",   "mlp.c_proj.bias",
      "ls_1.gamma",           "ls_2.gamma"};
  return known.count(r.substr(dot + 1)) > 0;
}

}  // namespace

TimmVitImport import_timm_vit(const StateDict& in) {
  const std::string hint =
      "HINT: retclip's ViT holds timm's VisionTransformer with a class and/or register "
      "tokens, learned absolute positions, LayerNorm, GELU or QuickGELU and token or avg "
      "pooling; use such a checkpoint (timm vit_*, RETFound, DINOv2) or a retclip export";
  // DINOv2 training checkpoints keep the tower under backbone. (teacher/student dicts).
  StateDict sd = find_tensor(in, "patch_embed.proj.weight") ? in : strip_prefix(in, "backbone.");
  // DINOv2's own layout with registers (register_tokens; the class token has a position
  // row, the registers do not) becomes timm's no_embed_class one, as timm converts it:
  // cls_token + pos_embed[:, 0] and the patch rows alone.
  if (const at::Tensor* reg = find_tensor(sd, "register_tokens")) {
    const at::Tensor* cls = find_tensor(sd, "cls_token");
    const at::Tensor* pe = find_tensor(sd, "pos_embed");
    RETCLIP_CHECK_USAGE(cls && pe && pe->dim() == 3,
                        "DINOv2 checkpoint with register_tokens but no cls_token / pos_embed "
                        "[1, N, D]. ",
                        hint);
    StateDict conv;
    const at::Tensor r = *reg, c = *cls + pe->slice(1, 0, 1), p = pe->slice(1, 1).contiguous();
    for (const auto& [k, v] : sd) {
      if (k == "register_tokens")
        conv.emplace_back("reg_token", r);
      else if (k == "cls_token")
        conv.emplace_back("cls_token", c);
      else if (k == "pos_embed")
        conv.emplace_back("pos_embed", p);
      else
        conv.emplace_back(k, v);
    }
    sd = std::move(conv);
  }
  for (const char* bad : {"attn_pool.latent", "dist_token", "head_dist.weight", "cls_token_pos"})
    RETCLIP_CHECK_USAGE(find_tensor(sd, bad) == nullptr, "timm ViT checkpoint has '", bad,
                        "', which retclip's ViT does not compute. ", hint);
  // head: a zero bias marks the CLIP projection (timm's CLIP ViTs, retclip's timm export);
  // any other head is a classifier of another task and is not used.
  const at::Tensor* hb = find_tensor(sd, "head.bias");
  const at::Tensor* hw = find_tensor(sd, "head.weight");
  const bool head_is_proj = hw && hw->dim() == 2 && (!hb || hb->eq(0).all().item<bool>());
  TimmVitImport out;
  for (const auto& [k, v] : sd) {
    if (k == "cls_token") {
      out.visual.emplace_back("visual.class_embedding", v.reshape({-1}));
    } else if (k == "reg_token") {
      out.visual.emplace_back("visual.register_embedding", v.reshape({v.size(-2), v.size(-1)}));
    } else if (k == "pos_embed") {
      out.visual.emplace_back("visual.positional_embedding", v.reshape({v.size(-2), v.size(-1)}));
    } else if (k == "head.weight" && head_is_proj) {
      out.visual.emplace_back("visual.proj", v.t().contiguous());
    } else if (k == "head.bias" && head_is_proj) {
      continue;  // zero
    } else if (is_unused_timm_key(k)) {
      out.ignored.push_back(k);
    } else if (starts_with(k, "blocks.")) {
      std::string r = "transformer.resblocks." + k.substr(7);
      for (const auto& [clip, timm] : block_renames()) r = replace_once(r, timm, clip);
      RETCLIP_CHECK_USAGE(is_vit_block_key(r), "timm ViT checkpoint: key '", k,
                          "' has no counterpart in retclip's ViT (e.g. qk_norm, SwiGLU). ", hint);
      out.visual.emplace_back("visual." + r, v);
    } else {
      std::string r = k;
      for (const auto& [clip, timm] : stem_renames())
        if (k == timm) r = clip;
      RETCLIP_CHECK_USAGE(r != k || k == "fc_norm.weight" || k == "fc_norm.bias",
                          "timm ViT checkpoint: key '", k,
                          "' has no counterpart in retclip's ViT. ", hint);
      out.visual.emplace_back("visual." + r, v);
    }
  }
  return out;
}

StateDict map_timm_vit(const StateDict& sd) {
  return import_timm_vit(sd).visual;
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
                      "[N,D] to read the ViT's sizes. HINT: model.vision.preset=checkpoint "
                      "needs a ViT checkpoint (OpenAI/OpenCLIP, timm vit_*, RETFound, DINOv2, "
                      "retclip)");
  VisionSizes v;
  v.width = conv->size(0);
  v.patch_size = conv->size(2);
  v.patch_bias = find_tensor(sd, "visual.conv1.bias") != nullptr;
  v.norm_pre = find_tensor(sd, "visual.ln_pre.weight") != nullptr;
  v.class_token = find_tensor(sd, "visual.class_embedding") != nullptr;
  if (const at::Tensor* reg = find_tensor(sd, "visual.register_embedding"))
    v.register_tokens = reg->size(0);
  const int64_t prefix = positional_prefix_rows(sd);
  v.pos_embed_prefix = prefix > 0 || (!v.class_token && v.register_tokens == 0);
  const int64_t n = pe->size(0) - prefix;
  const auto g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  RETCLIP_CHECK_USAGE(g * g == n, where, ": visual.positional_embedding has ", pe->size(0),
                      " rows, not ", prefix,
                      " class/register rows + a square patch grid. HINT: "
                      "only square grids are supported");
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
  v.layer_scale = find_tensor(sd, "visual.transformer.resblocks.0.ls_1.gamma") != nullptr;
  v.qkv_bias = find_tensor(sd, "visual.transformer.resblocks.0.attn.in_proj_bias") != nullptr;
  v.pool = find_tensor(sd, "visual.fc_norm.weight") ? config::Pool::kAvgFcNorm
           : v.class_token                          ? config::Pool::kToken
                                                    : config::Pool::kAvg;
  v.heads = v.width / 64 > 0 ? v.width / 64 : 1;
  if (const at::Tensor* proj = find_tensor(sd, "visual.proj")) v.embed_dim = proj->size(1);
  return v;
}

json vision_architecture_json(const model::VisionTransformerOptions& v) {
  return {{"image_size", v.image_size()},
          {"patch_size", v.patch_size()},
          {"width", v.width()},
          {"layers", v.layers()},
          {"heads", v.num_heads()},
          {"mlp_ratio", v.mlp_ratio()},
          {"embed_dim", v.embed_dim()},
          {"activation", model::vision_activation_name(v.activation())},
          {"patch_bias", v.patch_bias()},
          {"norm_pre", v.norm_pre()},
          {"class_token", v.class_token()},
          {"register_tokens", v.register_tokens()},
          {"pos_embed_prefix", v.pos_embed_prefix()},
          {"layer_scale", v.layer_scale()},
          {"pool", model::vision_pool_name(v.pool())},
          {"fc_norm", v.fc_norm()},
          {"qkv_bias", v.qkv_bias()},
          {"norm_eps", v.norm_eps()}};
}

model::VisionTransformerOptions vision_architecture_from_json(const json& m,
                                                              const std::string& where) {
  const model::VisionTransformerOptions clip;
  try {
    return model::VisionTransformerOptions()
        .image_size(m.at("image_size").get<int64_t>())
        .patch_size(m.at("patch_size").get<int64_t>())
        .width(m.at("width").get<int64_t>())
        .layers(m.at("layers").get<int64_t>())
        .heads(m.at("heads").get<int64_t>())
        .mlp_ratio(m.at("mlp_ratio").get<double>())
        .embed_dim(m.at("embed_dim").get<int64_t>())
        .activation(model::parse_vision_activation(m.value("activation", "quick_gelu"),
                                                   where + " activation"))
        .patch_bias(m.value("patch_bias", clip.patch_bias()))
        .norm_pre(m.value("norm_pre", clip.norm_pre()))
        .class_token(m.value("class_token", clip.class_token()))
        .register_tokens(m.value("register_tokens", clip.register_tokens()))
        .pos_embed_prefix(m.value("pos_embed_prefix", clip.pos_embed_prefix()))
        .layer_scale(m.value("layer_scale", clip.layer_scale()))
        .pool(model::parse_vision_pool(m.value("pool", "token"), where + " pool"))
        .fc_norm(m.value("fc_norm", clip.fc_norm()))
        .qkv_bias(m.value("qkv_bias", clip.qkv_bias()))
        .norm_eps(m.value("norm_eps", clip.norm_eps()));
  } catch (const json::exception& e) {
    throw UsageError(str_cat(where, ": incomplete image tower record (", e.what(),
                             "). HINT: write it again with the retclip that reads it"));
  }
}

std::string describe_vision(const config::ModelConfig& m, const std::string& source) {
  const model::VisionTransformerOptions o = model::vision_options(m);
  std::string size;
  switch (o.width()) {
    case 192:
      size = "Ti";
      break;
    case 384:
      size = "S";
      break;
    case 768:
      size = "B";
      break;
    case 1024:
      size = "L";
      break;
    case 1280:
      size = "H";
      break;
    case 1536:
      size = "g";
      break;
    default:
      size = fmt::format("{}w", o.width());
  }
  std::string s =
      fmt::format("{} ViT-{}/{}, {}", source, size, o.patch_size(),
                  o.activation() == model::VisionActivation::kGelu ? "GELU" : "QuickGELU");
  if (o.register_tokens() > 0) s += fmt::format(", {} registers", o.register_tokens());
  if (o.layer_scale() > 0) s += ", layer scale";
  if (!o.class_token()) s += ", no class token";
  s += o.pool() == model::VisionPool::kToken ? ", token pool"
       : o.fc_norm()                         ? ", avg pool + fc_norm"
                                             : ", avg pool";
  if (o.norm_pre()) s += ", ln_pre";
  s += fmt::format(", {} layers, {} px", o.layers(), o.image_size());
  return s;
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
    const StateDict raw = load_weights(m.init.vision);
    const StateDict sd = map_openai_clip_visual(raw);
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
    if (m.embed_dim == 0) {
      // No projection in the file (a timm / MAE / DINOv2 trunk): retclip's visual.proj is
      // a new layer, width x width unless model.embed_dim says otherwise.
      m.embed_dim = m.vision.width;
      log::info(
          "vision: {} has no projection; the new visual.proj maps the {}-wide feature to "
          "model.embed_dim = {} (set model.embed_dim to change it)",
          m.init.vision, m.vision.width, m.embed_dim);
    }
    // What the tensors show is the file's; a set layer scale value (only its initial
    // value, the weights replace it) and a set pool are kept.
    m.vision.patch_bias = v.patch_bias;
    m.vision.norm_pre = v.norm_pre;
    m.vision.class_token = v.class_token;
    m.vision.register_tokens = v.register_tokens;
    m.vision.pos_embed_prefix = v.pos_embed_prefix;
    m.vision.qkv_bias = v.qkv_bias;
    if (!v.layer_scale)
      m.vision.layer_scale = 0;
    else if (m.vision.layer_scale == 0)
      m.vision.layer_scale = 1e-5;
    if (m.vision.pool == config::Pool::kAuto) m.vision.pool = v.pool;
    log::info("vision: {}, from {}", describe_vision(m, is_timm_vit(raw) ? "timm" : "CLIP"),
              m.init.vision);
  }
}

}  // namespace retclip::io
