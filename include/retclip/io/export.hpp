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
/// Every format is written into a staging folder first and moved into out_dir only
/// when all succeeded: a format that cannot be written leaves out_dir as it was.
/// `tokenizer`: the tokenizer file to ship (empty: the one the checkpoint's run used,
/// see checkpoint_tokenizer). A text tower (parts text or full, formats open_clip and
/// hf) without a tokenizer file is refused, naming --tokenizer.
ExportResult export_checkpoint(const std::string& checkpoint, const std::string& out_dir,
                               const std::vector<std::string>& parts,
                               const std::vector<ExportFormat>& formats = {ExportFormat::kRetclip},
                               const std::string& tokenizer = "");

/// The tokenizer file of a checkpoint's run: data.tokenizer.path of its config when that
/// file exists, else the copy `retclip train` keeps in the run directory
/// (tokenizer.model / tokenizer.txt beside checkpoints/); empty when there is neither.
std::filesystem::path checkpoint_tokenizer(const config::Config& cfg,
                                           const std::filesystem::path& checkpoint_dir);

}  // namespace retclip::io
