// Export of trained encoders (`retclip export`).
//
// `retclip export --format retclip` writes, from a checkpoint, safetensors files with
// RET-CLIP key names (the open_clip, timm and hf formats: io/interop.hpp):
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
#include "retclip/io/interop.hpp"

namespace retclip::io {

struct ExportResult {
  std::vector<std::filesystem::path> files;
  int64_t step = 0;
};

/// `checkpoint`: a step-N directory, a checkpoints directory or a run directory (the
/// newest complete checkpoint is taken). `parts`: any of "vision", "text", "full" (the
/// retclip format's files). Each of `formats` is written by write_export_format: the
/// retclip format into out_dir, the others into out_dir/<format> (docs/WEIGHTS.md).
ExportResult export_checkpoint(const std::string& checkpoint, const std::string& out_dir,
                               const std::vector<std::string>& parts,
                               const std::vector<ExportFormat>& formats = {ExportFormat::kRetclip});

}  // namespace retclip::io
