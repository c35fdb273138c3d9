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

namespace retclip::io {

// ---------------------------------------------------------------------------------
// Export formats
// ---------------------------------------------------------------------------------

enum class ExportFormat {
  kRetclip,   ///< RET-CLIP keys: vision/text/full.safetensors + retclip.json (out_dir itself)
  kOpenClip,  ///< out_dir/open_clip: a whole open_clip CLIP (ViT + BERT tower) + tokenizer
  kTimm,      ///< out_dir/timm: timm vit_*_clip_quickgelu_* state dict + timm config.json
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

/// `visual.*` -> timm VisionTransformer keys for CLIP ViTs (as timm's own OpenAI-CLIP
/// filter): conv1 -> patch_embed.proj, class_embedding [D] -> cls_token [1,1,D],
/// positional_embedding [N,D] -> pos_embed [1,N,D], ln_pre -> norm_pre, ln_1/ln_2 ->
/// norm1/norm2, in_proj_* -> qkv.*, out_proj -> proj, c_fc/c_proj -> fc1/fc2, ln_post ->
/// norm, proj [D,E] -> head.weight [E,D] with a zero head.bias [E].
StateDict to_timm_vit(const StateDict& sd);

/// True when `sd` holds timm ViT keys (patch_embed.proj.weight, cls_token, blocks.*).
bool is_timm_vit(const StateDict& sd);

/// timm CLIP ViT keys -> `visual.*` (the inverse of to_timm_vit). Throws UsageError for
/// timm ViTs retclip's ViT cannot hold: a patch-embedding bias or no norm_pre (plain,
/// non-CLIP ViTs), fc_norm / attention pooling, a head with a non-zero bias. A model
/// without head (num_classes=0) maps to a dict without visual.proj.
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
};

/// Sizes of a CLIP ViT from its `visual.*` tensors (after map_openai_clip_visual):
/// width and patch from conv1.weight, image size from the positional grid, layers
/// from the resblocks, mlp_ratio from c_fc, embed_dim from proj (0 without it); heads
/// is width / 64 (CLIP's head width), which shapes cannot tell.
VisionSizes vision_sizes_from_weights(const StateDict& visual, const std::string& where);

/// Fills the sizes of model.text when its preset is "hf" (from model.init.text's
/// config.json) and of model.vision + model.embed_dim when its preset is "checkpoint"
/// (from model.init.vision's tensor shapes). Sizes already set (non-zero) are kept, as
/// overrides of a named preset are. Throws UsageError naming the key when the init
/// path the preset needs is empty, and naming the file when it cannot be read.
void resolve_pretrained_presets(config::ModelConfig& m);

}  // namespace retclip::io
