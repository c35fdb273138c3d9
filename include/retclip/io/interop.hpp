// Exported encoders in the formats other libraries load as their own (open_clip
// VisionTransformer, timm CLIP ViT, Hugging Face BertModel folder), the key maps both
// ways, and the sizes of pretrained towers read from their files (presets "hf" and
// "checkpoint"). Formats and file layouts are described in docs/WEIGHTS.md.
//
//   io::ExportBundle b{weights, sidecar, "vocab.txt", {"vision", "text", "full"}};
//   for (auto f : io::parse_export_formats("retclip,timm,hf"))
//     io::write_export_format(f, b, "export/");   // export/, export/timm/, export/hf/
//
//   auto sd = io::map_openai_clip_visual(io::load_weights("export/timm"));  // timm keys too
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/vision.hpp"

namespace retclip::io {

// ---------------------------------------------------------------------------------
// Export formats
// ---------------------------------------------------------------------------------

enum class ExportFormat {
  kRetclip,   ///< RET-CLIP keys: vision/text/full.safetensors + retclip.json (out_dir itself)
  kOpenClip,  ///< out_dir/open_clip: a whole open_clip CLIP (ViT + BERT tower) + tokenizer
  kTimm,      ///< out_dir/timm: timm ViT state dict (CLIP or timm's family) + timm config.json
  kHf,        ///< out_dir/hf: Hugging Face BertModel folder + its AutoTokenizer files
};

/// "retclip", "open_clip", "timm", "hf".
const char* export_format_name(ExportFormat f);

/// Throws UsageError listing the valid names (HINT names --format).
ExportFormat parse_export_format(const std::string& name);

/// A comma-separated list ("retclip,timm"); duplicates are dropped, order is kept.
std::vector<ExportFormat> parse_export_formats(const std::string& list);

/// The folder a format is written to: out_dir for retclip, out_dir/<name> otherwise.
std::filesystem::path export_format_dir(ExportFormat f, const std::filesystem::path& out_dir);

/// What every format is written from.
struct ExportBundle {
  StateDict weights;                ///< the full retclip state dict (DESIGN.md §4 keys)
  nlohmann::json sidecar;           ///< retclip.json (sizes, tokenizer, preprocessing, training)
  std::filesystem::path tokenizer;  ///< vocab.txt or .model to copy; empty = none
  std::vector<std::string> parts{"vision", "text", "full"};  ///< retclip format only
  /// Where the export ends up when the formats are written to a staging folder first;
  /// empty: the out_dir given to write_export_format. The open_clip config records the
  /// absolute path of its text/ folder under it.
  std::filesystem::path final_out_dir;
};

/// Throws the UsageError write_export_format would throw for what is missing or cannot
/// be expressed (a tower or head not in `weights`, no tokenizer file for hf/open_clip, a
/// tokenizer tokenizer.json cannot reproduce), writing nothing. Call it for every
/// format before writing any.
void check_export_format(ExportFormat f, const ExportBundle& b);

/// Writes one format (its weights, configs, the RET-CLIP heads where the towers leave
/// them out, and a README.md model card) and returns the files written. The sidecar
/// must have the layout export writes (vision, text, tokenizer, preprocessing,
/// embed_dim; training and config optional: data.tokenizer.map_quotes is read from the
/// tokenizer record or the config). check_export_format runs first, so a refused
/// format leaves no folder behind.
///
/// open_clip: `open_clip.create_model_and_transforms("local-dir:<out>/open_clip")` gives
/// a CustomTextCLIP whose encode_image is retclip's patient_img of a patient with that
/// one eye and whose encode_text is patient_txt (both padded with zero dimensions to
/// max(E, H + 2), see open_clip_text_head); get_tokenizer gives retclip's ids. The
/// RET-CLIP heads and the unfolded visual.proj are in retclip/retclip_heads.safetensors.
std::vector<std::filesystem::path> write_export_format(ExportFormat f, const ExportBundle& b,
                                                       const std::filesystem::path& out_dir);

/// open_clip's Hugging Face text head (pooler Linear(H,H) + tanh, then the bias-free
/// MLP Linear(H,M) -> GELU -> Linear(M,out_dim), M = (H + out_dim) / 2) carrying
/// retclip's patient text_projection Linear(H,H) -> ReLU -> Linear(H,E) exactly up to
/// fp32 rounding, for [CLS] states that are outputs of the tower's last LayerNorm
/// (the derivation is at the definition). Output dimensions beyond E are zero.
/// The rewrite is checked on 512 such states and throws retclip::Error when it differs
/// by more than 1e-5; UsageError when a key is missing or the LayerNorm weight has two
/// zero entries. Requires out_dim >= max(E, H + 2). For inference: its weights are
/// scaled by up to 1e12 and are no starting point for training in open_clip.
struct OpenClipTextHead {
  at::Tensor pooler_weight, pooler_bias;  ///< text.transformer.pooler.dense.{weight,bias}
  at::Tensor proj0_weight, proj2_weight;  ///< text.proj.0.weight [M,H], text.proj.2.weight
  double max_diff = 0;                    ///< of the self-check (L2-normalised outputs)
};
OpenClipTextHead open_clip_text_head(const StateDict& sd, int64_t out_dim);

/// The README.md model card of a format's folder (Hugging Face style: YAML front
/// matter, then preset, sizes, preprocessing, tokenizer, training data, steps, held-out
/// metrics and probe results when the sidecar has them, and the loading one-liner).
std::string model_card(ExportFormat f, const nlohmann::json& sidecar);

// ---------------------------------------------------------------------------------
// Key maps retclip -> foreign (the reverse maps are map_openai_clip_visual, which also
// takes timm keys, and map_hf_bert in state_dict.hpp)
// ---------------------------------------------------------------------------------

/// `visual.*` -> open_clip VisionTransformer keys (the prefix dropped; same tensors).
StateDict to_open_clip_visual(const StateDict& sd);

/// `visual.*` -> timm VisionTransformer keys (as timm's own OpenAI-CLIP filter for the
/// CLIP tower): conv1 -> patch_embed.proj, class_embedding [D] -> cls_token [1,1,D],
/// register_embedding [R,D] -> reg_token [1,R,D], positional_embedding [N,D] -> pos_embed
/// [1,N,D], ln_pre -> norm_pre, ln_1/ln_2 -> norm1/norm2, in_proj_* -> qkv.*, out_proj ->
/// proj, c_fc/c_proj -> fc1/fc2, ls_1/ls_2.gamma -> ls1/ls2.gamma, ln_post -> norm,
/// fc_norm -> fc_norm, proj [D,E] -> head.weight [E,D] with a zero head.bias [E].
StateDict to_timm_vit(const StateDict& sd);

/// True when `sd` holds timm ViT keys (patch_embed.proj.weight and pos_embed, also under
/// `backbone.` as DINOv2 training checkpoints keep them).
bool is_timm_vit(const StateDict& sd);

/// A timm ViT checkpoint read as retclip's image tower.
struct TimmVitImport {
  StateDict visual;                  ///< `visual.*` (the inverse of to_timm_vit)
  std::vector<std::string> ignored;  ///< keys the tower does not use, in file order
};

/// timm ViT keys -> `visual.*`: CLIP ViTs (norm_pre, no patch bias), plain ViTs and MAE /
/// RETFound checkpoints (patch bias, fc_norm), DINOv2 (reg_token, ls1/ls2; DINOv2's own
/// `backbone.` prefix and `register_tokens` layout converted as timm does). `head.*` with
/// a zero (or no) bias is the CLIP projection -> visual.proj; any other head (a classifier
/// of another task), the MAE decoder (`decoder_*`), `mask_token` and DINO heads are listed
/// in `ignored`. Throws UsageError naming the key for what retclip's ViT does not compute
/// (attention pooling, distillation token, qk_norm, SwiGLU, any unknown key).
TimmVitImport import_timm_vit(const StateDict& sd);

/// import_timm_vit(sd).visual.
StateDict map_timm_vit(const StateDict& sd);

/// `bert.*` -> Hugging Face BertModel keys (embeddings.*, encoder.*).
StateDict to_hf_bert(const StateDict& sd);

/// The RET-CLIP heads that no foreign tower carries: text_projection{,_left,_right}.*,
/// {global,left,right}_feature_mapping.weight, logit_scale{,_left,_right}.
StateDict retclip_heads(const StateDict& sd);

// ---------------------------------------------------------------------------------
// Sizes of pretrained towers (model.text.preset: hf, model.vision.preset: checkpoint)
// ---------------------------------------------------------------------------------

struct BertSizes {
  int64_t vocab_size = 0, hidden = 0, layers = 0, heads = 0, intermediate = 0, max_position = 0;
  int64_t type_vocab_size = 2, pad_id = 0;
  double layer_norm_eps = 1e-12;
};

/// Reads a BERT config.json (`path`: the file or its folder). Throws UsageError naming
/// the file and key for a missing size, and for what retclip's BERT does not compute
/// (hidden_act other than gelu, relative position embeddings, type_vocab_size != 2,
/// layer_norm_eps != 1e-12).
BertSizes read_hf_bert_config(const std::filesystem::path& path);

struct VisionSizes {
  int64_t image_size = 0, patch_size = 0, width = 0, layers = 0, heads = 0, embed_dim = 0;
  double mlp_ratio = 0;
  // What the tensors show of the architecture (model.vision.* of the same names).
  bool patch_bias = false, norm_pre = true, class_token = true, pos_embed_prefix = true;
  bool layer_scale = false, qkv_bias = true;
  int64_t register_tokens = 0;
  /// kAvgFcNorm with fc_norm, kAvg without a class token, else kToken.
  config::Pool pool = config::Pool::kToken;
};

/// Sizes and architecture of a ViT from its `visual.*` tensors (after
/// map_openai_clip_visual): width and patch from conv1.weight, patch bias from conv1.bias,
/// registers from register_embedding, image size from the positional grid (less the
/// class/register rows when they have rows), layers from the resblocks, mlp_ratio from
/// c_fc, layer scale from ls_1.gamma, qkv bias from in_proj_bias, embed_dim from proj (0
/// without it); heads is width / 64 (CLIP's head width), which shapes cannot tell.
VisionSizes vision_sizes_from_weights(const StateDict& visual, const std::string& where);

/// The image tower's architecture as sidecars record it (an export's retclip.json
/// "vision", a fine-tuned classifier's "model"): sizes, embed_dim and the timm options
/// (activation and pool by model's names).
nlohmann::json vision_architecture_json(const model::VisionTransformerOptions& v);
/// Back from such a record; options an older sidecar lacks take CLIP's values. Throws
/// UsageError naming `where` for a missing size or an unknown name.
model::VisionTransformerOptions vision_architecture_from_json(const nlohmann::json& j,
                                                              const std::string& where);

/// One line naming a tower: "timm ViT-L/16, GELU, avg pool + fc_norm, 24 layers, 224 px"
/// (`source`: "timm" or "CLIP").
std::string describe_vision(const config::ModelConfig& m, const std::string& source);

/// Fills the sizes of model.text when its preset is "hf" (from model.init.text's
/// config.json) and of model.vision + model.embed_dim when its preset is "checkpoint"
/// (from model.init.vision's tensor shapes). Sizes already set (non-zero) are kept, as
/// overrides of a named preset are; the architecture the tensors show (patch_bias,
/// norm_pre, class_token, register_tokens, pos_embed_prefix, layer_scale, qkv_bias) is
/// the file's, pool is filled when auto, and the tower is logged in one line
/// (describe_vision). Throws UsageError naming the key when the init
/// path the preset needs is empty, and naming the file when it cannot be read.
void resolve_pretrained_presets(config::ModelConfig& m);

}  // namespace retclip::io
