// Weights in and out of retclip: load a state dict from any supported file
// (safetensors, torch.save zip, TorchScript archive, Hugging Face model folder),
// map foreign key names to ours (docs/MODEL.md, State-dict keys), copy into a module with a report of
// what was missing, unexpected or of the wrong shape, and save as safetensors.
//
//   auto sd = retclip::io::load_weights("ViT-B-16.pt");              // OpenAI release
//   sd = retclip::io::map_openai_clip_visual(sd, /*target_grid=*/14);
//   auto report = retclip::io::apply_state_dict(*model, sd, /*strict=*/false, "visual.");
//   retclip::log::info("{}", report.to_string());
//
// Key formats are described in docs/WEIGHTS.md.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "retclip/io/safetensors.hpp"

namespace retclip::io {

/// Named tensors in file order. Names are unique (loaders reject duplicates).
using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

enum class WeightsFormat {
  kSafetensors,     ///< .safetensors (or any file starting with a valid header)
  kTorchZip,        ///< torch.save(...) zip archive (data.pkl + data/<n>)
  kTorchScript,     ///< torch.jit.save archive (has constants.pkl / code/)
  kHfSafetensorsIndex,  ///< model.safetensors.index.json (sharded HF checkpoint)
};

/// Names a format for logs ("safetensors", "torch.save zip", ...).
const char* format_name(WeightsFormat f);

/// Detects the format of a file from its first bytes (and, for zips, its records).
/// Throws UsageError naming the path for anything else (e.g. legacy non-zip pickles).
WeightsFormat detect_weights_format(const std::filesystem::path& path);

/// Loads every tensor of a weights file. `path` may be a file of any WeightsFormat or a
/// Hugging Face model folder (model.safetensors, model.safetensors.index.json or
/// pytorch_model.bin inside). torch.save checkpoints nested as {"state_dict": ...},
/// {"model": ...} or {"module": ...} are unwrapped (repeatedly); non-tensor entries are
/// skipped; a leading "module." (DistributedDataParallel) is stripped from every key.
/// TorchScript archives give named_parameters() + named_buffers() of the module.
/// Tensors come back on the CPU, contiguous. `metadata`, when given, receives the
/// safetensors "__metadata__" (empty for other formats).
StateDict load_weights(const std::filesystem::path& path,
                       std::map<std::string, std::string>* metadata = nullptr);

/// Writes `sd` as safetensors (atomically). Tensors on other devices are copied to CPU.
void save_weights(const std::filesystem::path& path, const StateDict& sd,
                  const std::map<std::string, std::string>& metadata = {});

/// Removes `prefix` from the keys that start with it; other keys stay as they are.
StateDict strip_prefix(const StateDict& sd, const std::string& prefix);

/// Keeps the entries whose key starts with `prefix` (the prefix itself is kept).
StateDict filter_prefix(const StateDict& sd, const std::string& prefix);

/// Looks a key up; nullptr when absent.
const at::Tensor* find_tensor(const StateDict& sd, const std::string& name);

// ---------------------------------------------------------------------------------
// Key maps: foreign names -> retclip names (docs/MODEL.md, State-dict keys)
// ---------------------------------------------------------------------------------

/// OpenAI CLIP or OpenCLIP ViT weights (full model or visual-only) -> `visual.*`.
/// A full checkpoint is recognised by its `visual.` keys; the text tower
/// (token_embedding, transformer.*, ln_final, text_projection, logit_scale, ...) is
/// dropped. A visual-only checkpoint (conv1.weight, class_embedding, ...) gets the
/// `visual.` prefix. When `target_grid` > 0 and `visual.positional_embedding` has a
/// different number of patches, it is resized with resize_positional_embedding.
/// Throws UsageError when the dict holds no CLIP ViT (no class_embedding /
/// positional_embedding / conv1.weight), e.g. a ModifiedResNet or timm trunk.
/// timm ViTs (patch_embed.proj.weight + pos_embed: CLIP, plain, MAE / RETFound, DINOv2)
/// are mapped with io::map_timm_vit (interop.hpp) first; the positional embedding is then
/// resampled with resample_positional_embedding, its class/register rows kept.
StateDict map_openai_clip_visual(const StateDict& sd, int64_t target_grid = 0);

/// Hugging Face BERT weights (BertModel keys, or BertFor* keys under `bert.`) ->
/// `bert.*`. Drops pooler.*, cls.*, other task heads and `*.position_ids` buffers;
/// renames TF-era LayerNorm.gamma/beta to weight/bias. Throws UsageError when no
/// embeddings/encoder key is found.
StateDict map_hf_bert(const StateDict& sd);

/// RET-CLIP reference checkpoints (Chinese-CLIP code base, trained under DDP): strips
/// `module.`; drops `bert.pooler.*` and `*.position_ids` (retclip's BERT has neither).
/// Every other key already has retclip's name.
StateDict map_retclip(const StateDict& sd);

/// Resizes a ViT positional embedding to a new patch grid, as OpenCLIP's
/// resize_pos_embed: the class-token row is kept, the grid rows are reshaped to
/// [1,D,g,g], interpolated bicubically (align_corners=false; antialias when shrinking,
/// as OpenCLIP) to [1,D,new_grid,new_grid] and flattened back. Computed in float32 (or
/// float64 for double input) and returned in the input dtype. Returns the input when
/// the grid already matches.
/// Shape: pe [1+g*g, D] -> [1+new_grid*new_grid, D]
at::Tensor resize_positional_embedding(const at::Tensor& pe, int64_t new_grid, bool antialias = true);

/// timm's resample_abs_pos_embed (as its checkpoint filter calls it): the first
/// `prefix_rows` rows (class and register tokens) are kept, the g x g patch rows are
/// interpolated bicubically in float32 with antialias=True and align_corners=False to
/// new_grid x new_grid; the result has the input dtype. Returns the input when the grid
/// already matches. Throws UsageError when the patch rows are not a square grid.
/// Shape: pe [prefix_rows+g*g, D] -> [prefix_rows+new_grid*new_grid, D]
at::Tensor resample_positional_embedding(const at::Tensor& pe, int64_t new_grid,
                                         int64_t prefix_rows);

/// Rows of `visual.positional_embedding` in `visual` that belong to the class and
/// register tokens: their count when the rest is a square grid (CLIP, timm's default),
/// else 0 (timm's no_embed_class); 0 without a positional embedding.
int64_t positional_prefix_rows(const StateDict& visual);

// ---------------------------------------------------------------------------------
// Copying into a module
// ---------------------------------------------------------------------------------

struct ShapeMismatch {
  std::string name;
  std::vector<int64_t> expected;  ///< the module's shape
  std::vector<int64_t> found;     ///< the state dict's shape
};

/// What apply_state_dict did.
struct LoadReport {
  std::vector<std::string> loaded;      ///< copied into the module
  std::vector<std::string> missing;     ///< in the module, not in the dict
  std::vector<std::string> unexpected;  ///< in the dict, not in the module
  std::vector<ShapeMismatch> shape_mismatch;
  /// A CLIP checkpoint's learned temperature `logit_scale` (load_pretrained, vision kind).
  std::optional<double> logit_scale;

  /// True when nothing was missing, unexpected or mismatched.
  bool ok() const { return missing.empty() && unexpected.empty() && shape_mismatch.empty(); }
  /// "loaded 150 tensors; 2 missing: a, b; 1 unexpected: c; 1 shape mismatch: d
  /// (expected [768], found [512])". Lists the first `max_items` of each kind.
  std::string to_string(size_t max_items = 10) const;
};

/// Copies `sd` into the parameters and buffers of `module` (values converted to each
/// target's dtype and device) under NoGradGuard. When `prefix_filter` is non-empty
/// only module and dict keys starting with it take part (e.g. "visual." loads just
/// the image tower and ignores everything else on both sides). Entries with the wrong
/// shape are skipped and reported. In strict mode, any missing, unexpected or
/// mismatched key throws UsageError (first 10 of each + counts) before anything is
/// copied.
LoadReport apply_state_dict(torch::nn::Module& module, const StateDict& sd, bool strict,
                            const std::string& prefix_filter = "");

/// What a pretrained weights file holds, and so which key map and scope it loads with.
enum class Pretrained {
  kFull,    ///< a retclip or RET-CLIP checkpoint, every key, strict (model.init.full)
  kVision,  ///< OpenAI CLIP / OpenCLIP ViT weights into `visual.*` (model.init.vision)
  kText,    ///< Hugging Face BERT weights into `bert.*` (model.init.text)
};

/// Loads the weights file `path` into `module` as `kind` says (the key map above, then
/// apply_state_dict; for kVision the positional embedding is resized to `vision_grid`
/// patches per side when > 0). `key` is where the user named the file (a config key
/// such as "model.init.full", or a CLI flag such as "--weights"). Every error, from the
/// file format through non-finite tensors to missing keys, names `key` and `path`, and
/// its hint names config keys or flags only.
LoadReport load_pretrained(torch::nn::Module& module, const std::filesystem::path& path,
                           Pretrained kind, const std::string& key, int64_t vision_grid = 0);

/// The module's parameters and buffers as a StateDict (detached, sharing storage).
StateDict module_state_dict(const torch::nn::Module& module);

}  // namespace retclip::io
