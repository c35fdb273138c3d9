// One optimizer step of pretraining, the same function for `retclip train` and
// `retclip bench`:
//
//   zero grads ▸ forward/backward over the micro-batches (full-batch negatives, gathered
//   over ranks) ▸ gradient all-reduce ▸ losses averaged over ranks ▸ optimizer_update
//   (fp16 unscale ▸ clip ▸ non-finite check ▸ AdamW ▸ loss-scaler update) ▸ logit-scale
//   clamp
//
// optimizer_update is the part every training step shares (fine-tuning too).
//
//   train::StepContext ctx = train::make_step_context(cfg, net, optimizer, comm);
//   train::StepResult r = train::train_step(ctx, batch, lr, state.scaler);
//   if (r.skipped) ...;  r.losses.level[model::Level::kLeft] ...
//
// Accumulation (k micro-batches): the contrastive problem still spans all k·B patients,
// as OpenCLIP's accum_freq: every micro-batch's features are first computed without
// gradient and cached, then each micro-batch is recomputed with gradient against the
// cached rest. The summed gradients equal one pass over the full batch (step_test).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/loss/tripartite.hpp"
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

/// Legend: B patients, S image side, T tokens.
struct MicroBatch {
  at::Tensor left, right;          ///< [B,3,S,S] float
  at::Tensor tokens;               ///< [B,T] int64
  at::Tensor has_left, has_right;  ///< [B] bool
  /// [B,2] int64 per-eye report ids (data::Batch::eye_report_id; -1 = none) or undefined.
  at::Tensor eye_report_id;
  int64_t size() const { return tokens.size(0); }
};

/// Splits a batch into k micro-batches of (nearly) equal size along dim 0.
std::vector<MicroBatch> split_batch(const MicroBatch& batch, int64_t k);

/// Numeric precision of the forward pass: fp32, or autocast to bf16 / fp16 (CUDA only).
enum class Precision { kFp32, kBf16, kFp16 };
Precision parse_precision(const std::string& s);

/// The device train.device names: cpu, cuda (GPU `local_rank`; UsageError without CUDA),
/// or auto (CUDA when usable).
at::Device resolve_device(const std::string& want, int64_t local_rank = 0);

/// Enables autocast for CUDA forward passes in bf16 / fp16 for its lifetime (a no-op for
/// fp32 or on CPU) and restores the previous state.
class AutocastScope {
 public:
  AutocastScope(Precision p, const at::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false, prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

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

/// What a step needs besides the batch; built once per run by make_step_context.
struct StepContext {
  model::RetClip net{nullptr};
  torch::optim::AdamW* optimizer = nullptr;
  std::vector<at::Tensor> params;  ///< the optimizer's parameters (clipping, unscale)
  std::shared_ptr<dist::Comm> comm;
  std::shared_ptr<dist::GradSync> grad_sync;
  loss::TripartiteLossOptions loss;
  Precision precision = Precision::kFp32;
  int64_t accum_steps = 1;
  double clip_norm = 0;        ///< optim.clip_norm (0 = off)
  double logit_scale_max = 0;  ///< loss.logit_scale_max
};

/// Broadcasts rank 0's parameters and buffers to every rank (identity in one process)
/// and sets up the gradient sync: call after the weights are final (init, resume).
StepContext make_step_context(const config::Config& cfg, model::RetClip net,
                              torch::optim::AdamW& optimizer, std::shared_ptr<dist::Comm> comm);

struct StepResult {
  StepLosses losses;     ///< averaged over ranks
  double grad_norm = 0;  ///< total norm before clipping (after unscaling)
  bool skipped = false;  ///< non-finite loss or gradient: no update was made
  bool stop = false;     ///< some rank asked to stop (agreed in the loss all-reduce)
};

/// One optimizer step at learning rate `lr` (see the top of this file). `stop_here` is
/// this rank's wish to stop after the step; the result says whether any rank has one.
StepResult train_step(StepContext& ctx, const MicroBatch& batch, double lr, LossScaler& scaler,
                      bool stop_here = false, StepPhases* phases = nullptr);

}  // namespace retclip::train
