// The tripartite contrastive loss of RET-CLIP: symmetric InfoNCE at patient, left-eye
// and right-eye level, each with its own learnable temperature. Built to take features
// gathered from all ranks: rows [local_begin, local_end) are this rank's.
//
//   auto e = net->forward(left, right, tokens, has_left, has_right);   // one rank
//   auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
//   out.total.backward();
//
// Missing eyes: rows without a left image take no part in the left level (neither as
// query nor as negative); likewise right. The patient level uses every row.
// Legend: N global rows (all ranks), E embed.
#pragma once

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <cstdint>

#include "retclip/model/retclip.hpp"

namespace retclip::loss {

struct TripartiteLossOptions {
  /// weight_patient / weight_left / weight_right of a level.
  double weight(model::Level level) const;

  TORCH_ARG(double, weight_patient) = 1.0;
  TORCH_ARG(double, weight_left) = 1.0;
  TORCH_ARG(double, weight_right) = 1.0;
  /// Scale used is exp(min(logit_scale, logit_scale_max)); default ln 100 (OpenCLIP).
  TORCH_ARG(double, logit_scale_max) = 4.6051701859880914;
  /// true: only rows [local_begin, local_end) are queries, against all N columns
  /// (OpenCLIP --local-loss); false: all N rows against all N columns.
  TORCH_ARG(bool, local_loss) = false;
  /// Ranks whose gradients are averaged. With local_loss each rank's level loss is its
  /// query rows' summed cross entropy over the global count of valid rows, times this,
  /// so that the mean over ranks is exactly the global-batch loss even when ranks hold
  /// different numbers of left / right eyes.
  TORCH_ARG(int64_t, world_size) = 1;
  /// loss.duplicates: positive. Rows whose report ids are equal (identical report text)
  /// are positives of each other, the soft targets spread evenly over them (multi-positive
  /// InfoNCE, as SupCon / FLAIR); false: every other row is a negative (CLIP, RET-CLIP).
  TORCH_ARG(bool, duplicates_positive) = false;
  /// loss.gather, read by train::step_loss (the loss itself gathers nothing): true, every
  /// rank's rows are negatives; false, each rank's own batch only (RET-CLIP's
  /// --skip-aggregate).
  TORCH_ARG(bool, gather) = true;
};

/// One level's loss: symmetric cross entropy over the valid rows, and the in-batch top-1
/// accuracies of its query rows (0 when it has none).
struct LevelLoss {
  at::Tensor loss;  ///< scalar with grad; 0 (still in the graph) when no query row is valid
  double acc_i2t = 0, acc_t2i = 0;
  int64_t rows = 0;  ///< query rows counted
};

struct LossOutput {
  at::Tensor total;  ///< weighted sum of the three levels (scalar, with grad)
  model::PerLevel<LevelLoss> level;
};

/// One level: symmetric cross entropy of exp(min(scale, max)) * img @ txt^T over the
/// rows where `valid` is true (undefined = all), queries restricted to
/// [local_begin, local_end) when local_loss. Labels are the diagonal; with
/// duplicates_positive and `report_id` defined, every valid column of the same id.
/// Shape: img, txt [N, E]; scale scalar; valid [N] bool; report_id [N] int64.
LevelLoss contrastive_level(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                            const at::Tensor& valid, int64_t local_begin, int64_t local_end,
                            const TripartiteLossOptions& options, const at::Tensor& report_id = {});

/// The three levels and their weighted total over (possibly gathered) embeddings.
/// local_end < 0 means N. With local_loss false the range is ignored.
LossOutput tripartite_loss(const model::Embeddings& global, const TripartiteLossOptions& options,
                           int64_t local_begin = 0, int64_t local_end = -1);

}  // namespace retclip::loss
