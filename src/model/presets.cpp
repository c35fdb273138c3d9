// Named model sizes and the config -> RetClipOptions bridge (the only place where
// model code meets the config structs; it never sees YAML).
#include "retclip/model/presets.hpp"

#include "retclip/util/error.hpp"

namespace retclip::model {
namespace {

// Preset names whose sizes come from a pretrained tower's files, filled into the config
// by io::resolve_pretrained_presets before the model is built: the ViT's from
// model.init.vision's tensor shapes, the BERT's from model.init.text's config.json.
constexpr const char* kVisionFromCheckpoint = "checkpoint";
constexpr const char* kTextFromHf = "hf";

struct VisionPreset {
  int64_t embed, image, layers, width, patch;
};

struct TextPreset {
  int64_t vocab, hidden, layers, heads, ffn, max_pos;  // vocab 0 = the tokenizer's
};

const std::vector<std::pair<std::string, VisionPreset>>& vision_table() {
  static const std::vector<std::pair<std::string, VisionPreset>> t{
      {"ViT-B-16", {512, 224, 12, 768, 16}},
      {"ViT-L-14", {768, 224, 24, 1024, 14}},
      {"ViT-S-8", {512, 224, 12, 384, 8}},
      {"vit-tiny", {128, 64, 4, 128, 8}},
      {"vit-micro", {32, 32, 2, 64, 8}}};
  return t;
}

const std::vector<std::pair<std::string, TextPreset>>& text_table() {
  static const std::vector<std::pair<std::string, TextPreset>> t{
      {"RoBERTa-wwm-ext-base-chinese", {21128, 768, 12, 12, 3072, 512}},
      {"RoBERTa-wwm-ext-large-chinese", {21128, 1024, 24, 16, 4096, 512}},
      {"RBT3-chinese", {21128, 768, 3, 12, 3072, 512}},
      {"bert-base-uncased", {30522, 768, 12, 12, 3072, 512}},
      {"bert-tiny", {0, 128, 2, 2, 512, 128}},
      {"bert-micro", {0, 64, 2, 2, 128, 64}}};
  return t;
}

template <typename T>
std::string join_names(const std::vector<std::pair<std::string, T>>& table) {
  std::string s;
  for (const auto& [name, _] : table) s += (s.empty() ? "" : ", ") + name;
  return s;
}

}  // namespace

std::vector<std::string> vision_preset_names() {
  std::vector<std::string> out;
  for (const auto& [name, _] : vision_table()) out.push_back(name);
  out.push_back(kVisionFromCheckpoint);
  return out;
}

std::vector<std::string> text_preset_names() {
  std::vector<std::string> out;
  for (const auto& [name, _] : text_table()) out.push_back(name);
  out.push_back(kTextFromHf);
  return out;
}

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
  for (const auto& [n, p] : vision_table()) {
    if (n != name) continue;
    return VisionTransformerOptions()
        .embed_dim(p.embed)
        .image_size(p.image)
        .layers(p.layers)
        .width(p.width)
        .patch_size(p.patch)
        .heads(p.width / 64 > 0 ? p.width / 64 : 1)
        .mlp_ratio(4.0);
  }
  throw UsageError(str_cat("unknown vision preset '", name, "' (key model.vision.preset). ",
                           "HINT: valid names are ", join_names(vision_table()), ", or ",
                           kVisionFromCheckpoint, " (sizes from model.init.vision)"));
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
  for (const auto& [n, p] : text_table()) {
    if (n != name) continue;
    const int64_t vocab = vocab_size > 0 ? vocab_size : p.vocab;
    RETCLIP_CHECK_USAGE(vocab > 0, "text preset '", name,
                        "' has no fixed vocabulary and none was given (key "
                        "model.text.vocab_size). HINT: pass the tokenizer's vocabulary size");
    return BertOptions()
        .vocab_size(vocab)
        .hidden(p.hidden)
        .layers(p.layers)
        .heads(p.heads)
        .intermediate(p.ffn)
        .max_position(p.max_pos)
        .type_vocab_size(2);
  }
  throw UsageError(str_cat("unknown text preset '", name, "' (key model.text.preset). ",
                           "HINT: valid names are ", join_names(text_table()), ", or ", kTextFromHf,
                           " (sizes from model.init.text's config.json)"));
}

RetClipOptions retclip_options(const config::ModelConfig& cfg, int64_t tokenizer_vocab,
                               bool grad_checkpointing) {
  auto v = vision_preset(cfg.vision.preset);
  if (cfg.vision.image_size > 0) v.image_size(cfg.vision.image_size);
  if (cfg.vision.patch_size > 0) v.patch_size(cfg.vision.patch_size);
  if (cfg.vision.width > 0) v.width(cfg.vision.width).heads(0);
  if (cfg.vision.layers > 0) v.layers(cfg.vision.layers);
  if (cfg.vision.heads > 0) v.heads(cfg.vision.heads);
  if (cfg.vision.mlp_ratio > 0) v.mlp_ratio(cfg.vision.mlp_ratio);
  if (cfg.embed_dim > 0) v.embed_dim(cfg.embed_dim);
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
