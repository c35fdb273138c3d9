// Key maps from foreign checkpoints (OpenAI CLIP / OpenCLIP, Hugging Face BERT,
// RET-CLIP reference) to retclip's state-dict names, and the positional-embedding
// resize OpenCLIP applies when the image size changes.
#include <torch/nn/functional/upsampling.h>

#include <cmath>

#include "retclip/io/interop.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/strings.hpp"

namespace retclip::io {

namespace {

using util::starts_with;
using util::ends_with;

// Patches per side of a [prefix+g*g, D] positional embedding; 0 when it is not square.
int64_t grid_of(const at::Tensor& pe, int64_t prefix = 1) {
  if (pe.dim() != 2 || pe.size(0) < prefix + 1) return 0;
  const int64_t n = pe.size(0) - prefix;
  const auto g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  return g * g == n ? g : 0;
}

}  // namespace

int64_t positional_prefix_rows(const StateDict& visual) {
  const at::Tensor* pe = find_tensor(visual, "visual.positional_embedding");
  if (!pe || pe->dim() != 2) return 0;
  int64_t prefix = find_tensor(visual, "visual.class_embedding") ? 1 : 0;
  if (const at::Tensor* reg = find_tensor(visual, "visual.register_embedding"))
    prefix += reg->dim() == 2 ? reg->size(0) : 0;
  // Rows for the prefix tokens too (CLIP, timm's default), else patches only (timm's
  // no_embed_class); the first reading wins when both give a square grid.
  if (grid_of(*pe, prefix) > 0 || grid_of(*pe, 0) == 0) return prefix;
  return 0;
}

at::Tensor resample_positional_embedding(const at::Tensor& pe, int64_t new_grid,
                                         int64_t prefix_rows) {
  RETCLIP_CHECK_USAGE(new_grid > 0, "cannot resample the image positional embedding to a ",
                      new_grid, "x", new_grid,
                      " patch grid: expected a positive grid. HINT: the grid is "
                      "model.vision.image_size / model.vision.patch_size; set both to positive "
                      "values");
  const int64_t g = grid_of(pe, prefix_rows);
  RETCLIP_CHECK_USAGE(g > 0,
                      "the image weights' positional embedding (visual.positional_embedding)"
                      " has shape ",
                      pe.sizes(), "; expected [", prefix_rows,
                      "+g*g, D]: rows for the class/register tokens and a square g x g patch "
                      "grid. HINT: use a checkpoint with a square image size");
  if (g == new_grid) return pe;
  const int64_t d = pe.size(1);
  // timm's resample_abs_pos_embed: float32, bicubic, antialias=True, align_corners=False.
  at::Tensor tok = pe.slice(0, 0, prefix_rows);
  at::Tensor img =
      pe.slice(0, prefix_rows).to(at::kFloat).reshape({1, g, g, d}).permute({0, 3, 1, 2});
  namespace F = torch::nn::functional;
  img = F::interpolate(img, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{new_grid, new_grid})
                                .mode(torch::kBicubic)
                                .align_corners(false)
                                .antialias(true));
  img = img.permute({0, 2, 3, 1}).reshape({new_grid * new_grid, d}).to(pe.scalar_type());
  return at::cat({tok, img}, 0).contiguous();
}

at::Tensor resize_positional_embedding(const at::Tensor& pe, int64_t new_grid, bool antialias) {
  RETCLIP_CHECK_USAGE(
      new_grid > 0, "cannot resize the image positional embedding to a ", new_grid, "x", new_grid,
      " patch grid: expected a positive grid. HINT: the grid is "
      "model.vision.image_size / model.vision.patch_size; set both to positive values");
  const int64_t g = grid_of(pe);
  RETCLIP_CHECK_USAGE(
      g > 0,
      "the image weights' positional embedding (visual.positional_embedding) "
      "has shape ",
      pe.sizes(),
      "; expected [1+g*g, D]: one class token and a square "
      "g x g patch grid. HINT: image weights with extra tokens or a non-square grid "
      "cannot be loaded; use a CLIP ViT checkpoint with a square image size");
  if (g == new_grid) return pe;
  const int64_t d = pe.size(1);
  const auto compute = pe.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor tok = pe.slice(0, 0, 1);
  at::Tensor img = pe.slice(0, 1).to(compute).reshape({1, g, g, d}).permute({0, 3, 1, 2});
  namespace F = torch::nn::functional;
  img = F::interpolate(img, F::InterpolateFuncOptions()
                                .size(std::vector<int64_t>{new_grid, new_grid})
                                .mode(torch::kBicubic)
                                .align_corners(false)
                                .antialias(antialias));
  img = img.permute({0, 2, 3, 1}).reshape({new_grid * new_grid, d}).to(pe.scalar_type());
  return at::cat({tok, img}, 0).contiguous();
}

StateDict map_openai_clip_visual(const StateDict& sd, int64_t target_grid) {
  // timm's ViTs (CLIP ones, plain, MAE / RETFound, DINOv2; retclip's timm export among
  // them) hold the tower under timm's names.
  StateDict out;
  if (is_timm_vit(sd)) {
    out = map_timm_vit(sd);
  } else {
    bool full = false;
    for (const auto& [k, v] : sd)
      if (starts_with(k, "visual.")) full = true;
    size_t dropped = 0;
    for (const auto& [k, v] : sd) {
      if (full) {
        if (starts_with(k, "visual."))
          out.emplace_back(k, v);
        else
          ++dropped;
      } else {
        out.emplace_back("visual." + k, v);
      }
    }
    bool has_trunk = false;
    for (const auto& [k, v] : out)
      if (starts_with(k, "visual.trunk.")) has_trunk = true;
    for (const char* need :
         {"visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding"})
      RETCLIP_CHECK_USAGE(find_tensor(out, need) != nullptr,
                          "expected ViT image weights (OpenAI CLIP, OpenCLIP or timm) but '", need,
                          "' is missing (", out.size(), " image keys). HINT: ",
                          has_trunk
                              ? "timm-trunk OpenCLIP models (visual.trunk.*) are not supported"
                              : "ModifiedResNet (RN50...) CLIP models are not supported; use a "
                                "ViT checkpoint, or put a full retclip / RET-CLIP checkpoint in "
                                "model.init.full");
    if (dropped) log::debug("CLIP image weights: dropped {} text-tower keys", dropped);
  }

  if (target_grid > 0) {
    const int64_t prefix = positional_prefix_rows(out);
    for (auto& [k, v] : out) {
      if (k != "visual.positional_embedding") continue;
      const int64_t g = grid_of(v, prefix);
      if (g != target_grid) {
        if (g > 0)  // a non-square embedding is refused by the resample itself
          log::info(
              "resampling visual.positional_embedding from a {}x{} to a {}x{} patch grid "
              "(bicubic, antialias, as timm; {} class/register rows kept)",
              g, g, target_grid, target_grid, prefix);
        v = resample_positional_embedding(v, target_grid, prefix);
      }
    }
  }
  return out;
}

StateDict map_hf_bert(const StateDict& sd) {
  StateDict out;
  size_t dropped = 0;
  for (const auto& [k, v] : sd) {
    std::string r = starts_with(k, "bert.") ? k.substr(5) : k;
    if (ends_with(r, ".position_ids") ||
        !(starts_with(r, "embeddings.") || starts_with(r, "encoder."))) {
      ++dropped;  // pooler.*, cls.*, task heads, position_ids buffers
      continue;
    }
    if (ends_with(r, "LayerNorm.gamma")) r = r.substr(0, r.size() - 5) + "weight";
    if (ends_with(r, "LayerNorm.beta")) r = r.substr(0, r.size() - 4) + "bias";
    out.emplace_back("bert." + r, v);
  }
  RETCLIP_CHECK_USAGE(!out.empty(),
                      "expected Hugging Face BERT weights (embeddings.*, encoder.*, "
                      "optionally under bert.) but found none among ",
                      sd.size(),
                      " keys. HINT: a full retclip / RET-CLIP checkpoint goes in model.init.full, "
                      "CLIP image weights in model.init.vision");
  if (dropped) log::debug("BERT weights: dropped {} keys (pooler, heads, position_ids)", dropped);
  return out;
}

StateDict map_retclip(const StateDict& sd) {
  StateDict out;
  for (const auto& [k, v] : strip_prefix(sd, "module.")) {
    if (starts_with(k, "bert.pooler.") || ends_with(k, ".position_ids")) continue;
    out.emplace_back(k, v);
  }
  return out;
}

}  // namespace retclip::io
