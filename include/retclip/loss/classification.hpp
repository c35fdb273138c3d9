// The losses of fine-tuning: cross-entropy on logits with (soft) probability targets,
// BCE with logits for multi-label sets, label smoothing, balanced class weights, and
// mixup / cutmix, which turn a batch's targets into the soft targets the loss reads.
//
//   at::Tensor t = loss::smooth_targets(onehot, 0.1, /*multi_label=*/false);   // [B, C]
//   loss::MixedBatch m = loss::mix_batch(images, {}, t, 0.8, 1.0, seed);
//   at::Tensor l = loss::classification_loss(net->forward(m.left), m.targets, false);
//
// Legend: B batch, C classes, S image side.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace retclip::loss {

/// Label smoothing of 0/1 targets [B, C]: single-label (1 - e) t + e / C (timm's
/// LabelSmoothingCrossEntropy / mixup_target), multi-label t (1 - e) + e / 2.
at::Tensor smooth_targets(const at::Tensor& targets, double eps, bool multi_label);

/// Mean loss of `logits` [B, C] against (soft) `targets` [B, C] in float32.
/// Single-label: cross-entropy of log_softmax(logits) with probability targets,
/// -sum_c w_c t_c log p_c averaged over rows (torch.nn.functional.cross_entropy with
/// probability targets and weight w); multi-label: binary_cross_entropy_with_logits
/// averaged over rows and labels, `class_weight` its pos_weight. An undefined
/// class_weight weighs every class 1.
at::Tensor classification_loss(const at::Tensor& logits, const at::Tensor& targets,
                               bool multi_label, const at::Tensor& class_weight = {});

/// finetune.class_weights=balanced from the training targets [N, C] (0/1): single-label
/// n / (C' n_c) over the C' classes present (as scikit-learn; absent classes 1),
/// multi-label pos_weight n_neg / n_pos (1 for a label without positives).
at::Tensor balanced_class_weights(const at::Tensor& targets, bool multi_label);

/// Mixup / cutmix of a batch (timm's Mixup in batch mode: the partner of row i is row
/// B-1-i). With both alphas > 0 one of the two is picked per batch with probability 1/2.
/// lam ~ Beta(alpha, alpha); cutmix pastes a box of area (1 - lam) S^2 (lam then
/// corrected to the box actually pasted) into `left` and, when defined, `right`.
/// targets become lam t + (1 - lam) t_partner. Every draw comes from `seed`.
struct MixedBatch {
  at::Tensor left, right, targets;
  double lam = 1.0;
  bool cutmix = false;
};
MixedBatch mix_batch(const at::Tensor& left, const at::Tensor& right, const at::Tensor& targets,
                     double mixup_alpha, double cutmix_alpha, uint64_t seed);

}  // namespace retclip::loss
