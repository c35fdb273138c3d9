// Analytic FLOP count of a RET-CLIP training step, from the model options alone, for
// `retclip bench`'s model FLOPs utilisation (MFU). The formula is written out in
// docs/PERFORMANCE.md ("FLOPs per training step").
//
//   train::FlopCount f = train::count_flops(net->options(), /*tokens=*/100, /*batch=*/128);
//   double mfu = f.train_per_step() / step_seconds / (peak_tflops * 1e12);
//
// Counting rule (as PaLM / llm.c / nanoGPT's MFU): a multiply-add is 2 FLOPs; only
// matrix products are counted (linear layers, patch convolution, attention scores and
// values, contrastive logits); LayerNorm, softmax, GELU, embeddings and the optimizer are
// not. A training step is 3x the forward (backward = 2x forward); activation
// checkpointing's recomputation is not counted (MFU, not hardware FLOPs utilisation).
#pragma once

#include <cstdint>
#include <string>

#include "retclip/model/retclip.hpp"

namespace retclip::train {

/// Forward FLOPs, split by part. Per patient except `logits` (whole batch).
struct FlopCount {
  double vision_per_image = 0;   ///< one eye through the ViT (patch embed, blocks, proj)
  double text_per_report = 0;    ///< one report through BERT (layers; lookups are free)
  double heads_per_patient = 0;  ///< 3 text projections + 3 image feature mappings
  double logits_per_step = 0;    ///< 3 levels x 2·B·B·E contrastive logits
  int64_t batch = 0;             ///< patients per step

  /// Forward FLOPs of one patient (two eyes + one report + heads), without logits.
  double forward_per_patient() const {
    return 2 * vision_per_image + text_per_report + heads_per_patient;
  }
  /// Forward FLOPs of the whole step (batch patients + logits).
  double forward_per_step() const { return batch * forward_per_patient() + logits_per_step; }
  /// Training FLOPs of one step: 3x the forward.
  double train_per_step() const { return 3 * forward_per_step(); }
  /// Training FLOPs per patient (3x forward, logits shared out).
  double train_per_patient() const { return batch > 0 ? train_per_step() / batch : 0; }
};

/// Counts the FLOPs of `options` at `tokens` text positions and `batch` patients.
FlopCount count_flops(const model::RetClipOptions& options, int64_t tokens, int64_t batch);

/// Peak dense bf16 tensor-core rate (TFLOP/s, without sparsity) of a CUDA device, looked
/// up by its name (cudaDeviceProp::name, e.g. "NVIDIA H100 80GB HBM3"); 0 when unknown.
double peak_bf16_tflops(const std::string& device_name);

}  // namespace retclip::train
