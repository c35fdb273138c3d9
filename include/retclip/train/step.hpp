// One optimizer step, the same function for pretraining, fine-tuning and `retclip bench`;
// what runs per micro-batch is the step's Task (train/task.hpp):
//
//   zero grads ▸ task: forward/backward over the micro-batches (contrastive: full-batch
//   negatives gathered over ranks; classifier: each micro-batch's loss by its share of
//   the rows) ▸ gradient all-reduce ▸ losses averaged over ranks ▸ optimizer_update
//   (fp16 unscale ▸ clip ▸ non-finite check ▸ AdamW ▸ loss-scaler update) ▸ task's
//   after_update (contrastive: logit-scale clamp)
//
//   train::StepContext ctx = train::make_step_context(cfg, net, optimizer, comm);
//   train::StepResult r = train::train_step(ctx, batch, lr, state.scaler);
//   if (r.skipped) ...;  r.losses.level[model::Level::kLeft] ...
//
// Accumulation (k micro-batches): the contrastive problem still spans all k·B patients,
// as OpenCLIP's accum_freq: every micro-batch's features are first computed without
// gradient and cached, then each micro-batch is recomputed with gradient against the
// cached rest. The summed gradients equal one pass over the full batch (step_test). A
// classifier's loss is a mean over rows, so its micro-batches simply accumulate.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/loss/tripartite.hpp"
#include "retclip/model/autocast.hpp"
#include "retclip/model/level.hpp"
#include "retclip/model/retclip.hpp"

namespace torch::optim {
class AdamW;
class Optimizer;
}  // namespace torch::optim

namespace retclip::dist {
class Comm;
class GradSync;
}  // namespace retclip::dist

namespace retclip::train {

/// The batch of a step, or one micro-batch of it. Legend: B patients (classifier: images
/// or patients), S image side, T tokens, C classes.
struct MicroBatch {
  at::Tensor left, right;          ///< [B,3,S,S] float (classifier at eye level: left only)
  at::Tensor tokens;               ///< [B,T] int64 (contrastive)
  at::Tensor has_left, has_right;  ///< [B] bool
  /// [B,2] int64 per-eye report ids (data::Batch::eye_report_id; -1 = none) or undefined.
  at::Tensor eye_report_id{};
  at::Tensor targets{};   ///< [B,C] float (soft) targets (classifier)
  at::Tensor is_right{};  ///< [B] bool laterality of each row (per-eye classifier)
  int64_t size() const { return left.size(0); }
};

/// Splits a batch into k micro-batches of (nearly) equal size along dim 0 (every defined
/// field).
std::vector<MicroBatch> split_batch(const MicroBatch& batch, int64_t k);

/// The forward's precision and autocast scope (model/autocast.hpp), by their training names.
using model::AutocastScope;
using model::Precision;

/// The device train.device names: cpu, cuda (GPU `local_rank`; UsageError without CUDA),
/// or auto (CUDA when usable).
at::Device resolve_device(const std::string& want, int64_t local_rank = 0);

/// The embeddings and logit scales converted to fp32 (after an autocast forward).
model::Embeddings to_float(model::Embeddings e);

/// Forward without gradient under the given precision; embeddings returned in fp32.
model::Embeddings forward_no_grad(model::RetClip& net, const MicroBatch& mb, Precision precision);

/// The loss options of a config (loss.* keys) for `world` data-parallel ranks.
loss::TripartiteLossOptions loss_options(const config::Config& cfg, int64_t world = 1);

/// One id per token row, equal for equal rows (on every rank): the report ids of
/// loss.duplicates: positive. Shape: tokens [B, T] -> [B] int64.
at::Tensor report_ids(const at::Tensor& tokens);

/// The report ids of each level: the patient level's from the token rows; an eye level's
/// from the eye's own report (mb.eye_report_id) where the sample has one, else the
/// patient report's.
model::PerLevel<at::Tensor> level_report_ids(const MicroBatch& mb);

/// Loss values of a step: the full-batch loss (identical in every micro pass), per level.
/// A classifier's step has only `total` (the levels stay undefined, the accuracies 0).
struct StepLosses {
  at::Tensor total;                          ///< detached scalar (stays on the device)
  model::PerLevel<at::Tensor> loss;          ///< detached scalars
  model::PerLevel<double> acc_i2t, acc_t2i;  ///< in-batch top-1 accuracies
};

/// The process group of a step. Every rank's six embeddings are gathered with gradient,
/// so each rank's loss sees the global batch (this rank's rows are [rank·B, (rank+1)·B));
/// grad_sync averages the gradients after the last micro-batch's backward. With a
/// single-process Comm both are identities.
struct StepComm {
  dist::Comm& comm;
  dist::GradSync& grad_sync;
};

/// The loss of this rank's embeddings against every rank's rows (gathered with gradient),
/// or against this rank's rows only when `o.gather()` is false. Report ids, when set,
/// are gathered with the eye masks.
loss::LossOutput step_loss(const model::Embeddings& local, const loss::TripartiteLossOptions& o,
                           dist::Comm& comm);

/// Wall time of a step's phases, taken only when asked (bench): the device is synchronised
/// at each boundary, which training itself never does.
struct StepPhases {
  double forward_ms = 0;    ///< forward + loss (forward + backward when accumulating)
  double backward_ms = 0;   ///< 0 when accumulating (not separable)
  double optimizer_ms = 0;  ///< reduce, unscale, clip, AdamW, clamp
};

/// Forward + backward over the micro-batches (gradients accumulate into .grad).
/// `loss_scale` multiplies the loss before backward (fp16 gradient scaling).
StepLosses forward_backward(model::RetClip& net, const std::vector<MicroBatch>& micro,
                            const loss::TripartiteLossOptions& options, Precision precision,
                            double loss_scale, const StepComm& comm, StepPhases* phases = nullptr);
/// The same in one process (tests, tools).
StepLosses forward_backward(model::RetClip& net, const std::vector<MicroBatch>& micro,
                            const loss::TripartiteLossOptions& options, Precision precision,
                            double loss_scale = 1.0);

/// fp16 dynamic loss scaling, GradScaler's rule: the loss is multiplied by `scale`
/// before backward; a non-finite step halves it (not below 1), 2000 finite steps in a
/// row double it. Inert (factor 1) for fp32 and bf16.
struct LossScaler {
  bool enabled = false;
  double scale = 65536.0;
  int64_t good_steps = 0;  ///< finite steps since the last change

  double factor() const { return enabled ? scale : 1.0; }
  void update(bool finite);
};

/// The optimizer half of every step, pretraining or fine-tuning, after backward and the
/// gradient all-reduce: fp16 unscale, clip to `clip_norm` (0 = off), a non-finite check of
/// the gradient norm and `loss` (already averaged over ranks, so every rank decides the
/// same), the optimizer step (or zeroed gradients when skipped), the loss-scaler update.
struct StepUpdate {
  double grad_norm = 0;  ///< total norm before clipping (after unscaling)
  bool skipped = false;  ///< non-finite: no update was made
};
StepUpdate optimizer_update(torch::optim::Optimizer& optimizer,
                            const std::vector<at::Tensor>& params, double loss, double clip_norm,
                            LossScaler& scaler);

class Task;  // train/task.hpp

/// Backward of one micro-batch's loss (times the fp16 `loss_scale`); the gradient
/// all-reduce is armed for the last micro-batch only. Tasks call it from forward_backward.
void backward_micro(const at::Tensor& loss, double loss_scale, const StepComm& comm, bool last);

/// Plain gradient accumulation, for tasks whose loss is a mean over independent rows:
/// micro-batch j's loss weighted by its share of the rows, backward one by one; returns
/// the step's (detached) loss, the weighted sum.
StepLosses accumulate_micro_batches(Task& task, const std::vector<MicroBatch>& micro,
                                    double loss_scale, const StepComm& comm,
                                    StepPhases* phases = nullptr);

/// The step's settings besides the task.
struct StepOptions {
  int64_t accum_steps = 1;       ///< micro-batches per step (optim.accum_steps)
  double clip_norm = 0;          ///< gradient norm clip (0 = off)
  double bucket_mb = 25;         ///< gradient all-reduce bucket size (dist.bucket_mb)
  std::vector<double> lr_scale;  ///< per parameter group (layer-wise decay); empty: all 1
};

/// What a step needs besides the batch; built once per run by make_step_context.
struct StepContext {
  std::shared_ptr<Task> task;
  torch::optim::Optimizer* optimizer = nullptr;
  std::vector<at::Tensor> params;  ///< the optimizer's parameters (clipping, unscale)
  std::shared_ptr<dist::Comm> comm;
  std::shared_ptr<dist::GradSync> grad_sync;
  StepOptions options;
};

/// Broadcasts rank 0's parameters and buffers of the task's module to every rank
/// (identity in one process) and sets up the gradient sync: call after the weights are
/// final (init, resume).
StepContext make_step_context(std::shared_ptr<Task> task, torch::optim::Optimizer& optimizer,
                              std::shared_ptr<dist::Comm> comm, StepOptions options);
/// Pretraining's: a ContrastiveTask of `net` with the config's loss, precision,
/// accumulation, clipping and buckets.
StepContext make_step_context(const config::Config& cfg, model::RetClip net,
                              torch::optim::AdamW& optimizer, std::shared_ptr<dist::Comm> comm);

struct StepResult {
  StepLosses losses;     ///< averaged over ranks
  double loss = 0;       ///< losses.total averaged over ranks, in double
  double grad_norm = 0;  ///< total norm before clipping (after unscaling)
  bool skipped = false;  ///< non-finite loss or gradient: no update was made
  bool stop = false;     ///< some rank asked to stop (agreed in the loss all-reduce)
};

/// One optimizer step at learning rate `lr` (see the top of this file). `stop_here` is
/// this rank's wish to stop after the step; the result says whether any rank has one.
StepResult train_step(StepContext& ctx, const MicroBatch& batch, double lr, LossScaler& scaler,
                      bool stop_here = false, StepPhases* phases = nullptr);

}  // namespace retclip::train
