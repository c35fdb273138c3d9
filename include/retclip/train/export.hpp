// Export of trained encoders and embedding of a manifest with them.
//
// `retclip export` writes, from a checkpoint, safetensors files with RET-CLIP key names:
//   vision.safetensors  visual.* + global/left/right_feature_mapping.weight
//   text.safetensors    bert.* + text_projection{,_left,_right}.*
//   full.safetensors    every tensor (includes the three logit scales)
// and `retclip.json`, the sidecar with what a user needs to run the encoders without
// retclip: sizes, preprocessing (fundus crop, resize, mean/std), tokenizer file and
// context length, embed dim, and the resolved config.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"

namespace retclip::train {

struct ExportResult {
  std::vector<std::filesystem::path> files;
  int64_t step = 0;
};

/// `checkpoint`: a step-N directory, a checkpoints directory or a run directory (the
/// newest complete checkpoint is taken). `parts`: any of "vision", "text", "full".
ExportResult export_checkpoint(const std::string& checkpoint, const std::string& out_dir,
                               const std::vector<std::string>& parts);

/// Resolves a step-N directory from a checkpoint, checkpoints or run directory.
std::filesystem::path resolve_checkpoint_dir(const std::string& path);

struct EmbedOptions {
  std::string weights;   ///< export directory (retclip.json + full.safetensors)
  std::string manifest;  ///< CSV/JSONL manifest or RET-CLIP directory
  std::string split;     ///< only rows of this split (empty = all)
  std::string out;       ///< .safetensors or .npy prefix
  int64_t batch_size = 32;
  std::string device = "auto";
  bool save_inputs = false;  ///< also store input_left/right [N,3,S,S], input_tokens [N,T]
};

/// Writes patient_img, left_img, right_img, patient_txt, left_txt, right_txt [N,E]
/// (f32, L2-normalised; zero rows for a missing eye) and has_left / has_right [N]
/// (u8) to a safetensors file whose metadata holds the patient ids as a JSON list.
/// Returns the number of patients embedded.
int64_t embed_manifest(const EmbedOptions& options);

}  // namespace retclip::train
