// Named model sizes and the config -> RetClipOptions bridge (the only place where
// model code meets the config structs; it never sees YAML).
#include "retclip/model/presets.hpp"

#include "retclip/util/error.hpp"

namespace retclip::model {
namespace {

using config::kTextFromHf;
using config::kVisionFromCheckpoint;

std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& name : names) s += (s.empty() ? "" : ", ") + name;
  return s;
}

}  // namespace

VisionTransformerOptions vision_preset(const std::string& name) {
  // Sizes read from model.init.vision (io::resolve_pretrained_presets): every size comes
  // from the overrides, none from a table.
  if (name == kVisionFromCheckpoint)
    return VisionTransformerOptions()
        .embed_dim(0)
        .image_size(0)
        .layers(0)
        .width(0)
        .patch_size(0)
        .heads(0);
  for (const auto& [n, p] : config::vision_presets()) {
    if (n != name) continue;
    return VisionTransformerOptions()
        .embed_dim(p.embed_dim)
        .image_size(p.image_size)
        .layers(p.layers)
        .width(p.width)
        .patch_size(p.patch_size)
        .heads(p.width / 64 > 0 ? p.width / 64 : 1)
        .mlp_ratio(4.0);
  }
  throw UsageError(str_cat("unknown vision preset '", name, "' (key model.vision.preset). ",
                           "HINT: valid names are ", join_names(config::vision_preset_names()),
                           " (", kVisionFromCheckpoint, ": sizes from model.init.vision)"));
}

BertOptions text_preset(const std::string& name, int64_t vocab_size) {
  // Sizes read from model.init.text's config.json (io::resolve_pretrained_presets).
  if (name == kTextFromHf)
    return BertOptions()
        .vocab_size(vocab_size)
        .hidden(0)
        .layers(0)
        .heads(0)
        .intermediate(0)
        .max_position(0);
  for (const auto& [n, p] : config::text_presets()) {
    if (n != name) continue;
    const int64_t vocab = vocab_size > 0 ? vocab_size : p.vocab_size;
    RETCLIP_CHECK_USAGE(vocab > 0, "text preset '", name,
                        "' has no fixed vocabulary and none was given (key "
                        "model.text.vocab_size). HINT: pass the tokenizer's vocabulary size");
    return BertOptions()
        .vocab_size(vocab)
        .hidden(p.hidden)
        .layers(p.layers)
        .heads(p.heads)
        .intermediate(p.intermediate)
        .max_position(p.max_position)
        .type_vocab_size(2);
  }
  throw UsageError(str_cat("unknown text preset '", name, "' (key model.text.preset). ",
                           "HINT: valid names are ", join_names(config::text_preset_names()), " (",
                           kTextFromHf, ": sizes from model.init.text's config.json)"));
}

VisionTransformerOptions vision_options(const config::ModelConfig& cfg, bool grad_checkpointing) {
  auto v = vision_preset(cfg.vision.preset);
  if (cfg.vision.image_size > 0) v.image_size(cfg.vision.image_size);
  if (cfg.vision.patch_size > 0) v.patch_size(cfg.vision.patch_size);
  if (cfg.vision.width > 0) v.width(cfg.vision.width).heads(0);
  if (cfg.vision.layers > 0) v.layers(cfg.vision.layers);
  if (cfg.vision.heads > 0) v.heads(cfg.vision.heads);
  if (cfg.vision.mlp_ratio > 0) v.mlp_ratio(cfg.vision.mlp_ratio);
  if (cfg.embed_dim > 0) v.embed_dim(cfg.embed_dim);
  const auto& a = cfg.vision;
  v.patch_bias(a.patch_bias)
      .norm_pre(a.norm_pre)
      .class_token(a.class_token)
      .register_tokens(a.register_tokens)
      .pos_embed_prefix(a.pos_embed_prefix)
      .layer_scale(a.layer_scale)
      .qkv_bias(a.qkv_bias);
  // The derived defaults: CLIP's (QuickGELU, eps 1e-5) with ln_pre, timm's (GELU, 1e-6)
  // without; token pooling with a class token, avg without.
  const bool gelu = a.activation == config::Activation::kAuto
                        ? !a.norm_pre
                        : a.activation == config::Activation::kGelu;
  v.activation(gelu ? VisionActivation::kGelu : VisionActivation::kQuickGelu);
  v.norm_eps(a.norm_eps > 0 ? a.norm_eps : (a.norm_pre ? 1e-5 : 1e-6));
  const config::Pool pool = a.pool != config::Pool::kAuto ? a.pool
                            : a.class_token             ? config::Pool::kToken
                                                        : config::Pool::kAvg;
  v.pool(pool == config::Pool::kToken ? VisionPool::kToken : VisionPool::kAvg)
      .fc_norm(pool == config::Pool::kAvgFcNorm);
  v.grad_checkpointing(grad_checkpointing);
  RETCLIP_CHECK_USAGE(v.image_size() > 0 && v.patch_size() > 0 && v.width() > 0 && v.layers() > 0 &&
                          v.embed_dim() > 0,
                      "model.vision.preset=", cfg.vision.preset, " left a size unset (image_size ",
                      v.image_size(), ", patch_size ", v.patch_size(), ", width ", v.width(),
                      ", layers ", v.layers(), ", embed_dim ", v.embed_dim(),
                      "). HINT: with preset ", kVisionFromCheckpoint,
                      " the sizes are read from model.init.vision when a run starts; set "
                      "model.init.vision, or the model.vision.* sizes and model.embed_dim");
  RETCLIP_CHECK_USAGE(v.image_size() % v.patch_size() == 0, "expected model.vision.image_size (",
                      v.image_size(), ") to be a multiple of model.vision.patch_size (",
                      v.patch_size(), ")");
  RETCLIP_CHECK_USAGE(v.num_heads() > 0 && v.width() % v.num_heads() == 0,
                      "expected model.vision.width (", v.width(),
                      ") to be divisible by model.vision.heads (", v.num_heads(),
                      "). HINT: leave heads at 0 for width/64");
  return v;
}

RetClipOptions retclip_options(const config::ModelConfig& cfg, int64_t tokenizer_vocab,
                               bool grad_checkpointing) {
  const VisionTransformerOptions v = vision_options(cfg, grad_checkpointing);

  const int64_t vocab = cfg.text.vocab_size > 0 ? cfg.text.vocab_size : tokenizer_vocab;
  auto t = text_preset(cfg.text.preset, vocab);
  if (cfg.text.hidden > 0) t.hidden(cfg.text.hidden);
  if (cfg.text.layers > 0) t.layers(cfg.text.layers);
  if (cfg.text.heads > 0) t.heads(cfg.text.heads);
  if (cfg.text.intermediate > 0) t.intermediate(cfg.text.intermediate);
  if (cfg.text.max_position > 0) t.max_position(cfg.text.max_position);
  RETCLIP_CHECK_USAGE(cfg.text.dropout >= 0.0 && cfg.text.dropout < 1.0,
                      "expected model.text.dropout in [0, 1) but got ", cfg.text.dropout);
  t.hidden_dropout(cfg.text.dropout).attention_dropout(cfg.text.dropout);
  t.grad_checkpointing(grad_checkpointing);
  RETCLIP_CHECK_USAGE(t.vocab_size() > 0 && t.hidden() > 0 && t.layers() > 0 && t.heads() > 0 &&
                          t.intermediate() > 0 && t.max_position() > 0,
                      "model.text.preset=", cfg.text.preset, " left a size unset (vocab_size ",
                      t.vocab_size(), ", hidden ", t.hidden(), ", layers ", t.layers(), ", heads ",
                      t.heads(), ", intermediate ", t.intermediate(), ", max_position ",
                      t.max_position(), "). HINT: with preset ", kTextFromHf,
                      " the sizes are read from model.init.text's config.json when a "
                      "run starts; set model.init.text, or the model.text.* sizes");
  RETCLIP_CHECK_USAGE(t.hidden() % t.heads() == 0, "expected model.text.hidden (", t.hidden(),
                      ") to be divisible by model.text.heads (", t.heads(), ")");

  return RetClipOptions()
      .vision(v)
      .text(t)
      .embed_dim(v.embed_dim())
      .logit_scale_init(cfg.logit_scale_init);
}

}  // namespace retclip::model
