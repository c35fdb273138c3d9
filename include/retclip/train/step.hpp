// One optimizer step's forward and backward. With k micro-batches the contrastive
// problem still spans all k·B patients, as OpenCLIP's accum_freq: the features of every
// micro-batch are first computed without gradient and cached; then each micro-batch is
// recomputed with gradient and its loss taken against the cached rest. The summed
// gradients equal those of one pass over the full batch (tests/train/accumulate_test).
//
//   std::vector<train::MicroBatch> mb = train::split_batch(batch_tensors, k);
//   train::StepLosses l = train::forward_backward(net, mb, loss_opts, precision);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/loss/tripartite.hpp"
#include "retclip/model/retclip.hpp"

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
  int64_t size() const { return tokens.size(0); }
};

/// Splits a batch into k micro-batches of (nearly) equal size along dim 0.
std::vector<MicroBatch> split_batch(const MicroBatch& batch, int64_t k);

/// Numeric precision of the forward pass: fp32, or autocast to bf16 / fp16 (CUDA only).
enum class Precision { kFp32, kBf16, kFp16 };
Precision parse_precision(const std::string& s);

/// Loss values of a step (the full-batch loss; identical in every micro pass).
struct StepLosses {
  at::Tensor total, patient, left, right;  ///< detached scalars (stay on the device)
  double acc_patient_i2t = 0, acc_patient_t2i = 0, acc_left_i2t = 0, acc_left_t2i = 0,
         acc_right_i2t = 0, acc_right_t2i = 0;
};

/// The process group of a distributed step (both null: one process). The six
/// embeddings of every rank are gathered with gradient, so each rank's loss sees the
/// global batch (this rank's rows are [rank·B, (rank+1)·B)); grad_sync averages the
/// gradients over ranks after the last micro-batch's backward.
struct StepComm {
  dist::Comm* comm = nullptr;
  dist::GradSync* grad_sync = nullptr;
};

/// Forward + backward over the micro-batches (gradients accumulate into .grad).
/// `loss_scale` multiplies the loss before backward (fp16 gradient scaling).
StepLosses forward_backward(model::RetClip& net, const std::vector<MicroBatch>& micro,
                            const loss::TripartiteLossOptions& options, Precision precision,
                            double loss_scale = 1.0, const StepComm& comm = {});

/// The loss options of a config (loss.* keys) for `world` data-parallel ranks.
loss::TripartiteLossOptions loss_options(const config::Config& cfg, int64_t world = 1);

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

/// The loss of this rank's embeddings: alone (comm null or one rank), or against every
/// rank's rows gathered with gradient (this rank's rows are the local range).
loss::LossOutput step_loss(const model::Embeddings& local, const loss::TripartiteLossOptions& o,
                           const StepComm& comm = {});

/// Forward without gradient under the given precision; embeddings returned in fp32.
model::Embeddings forward_no_grad(model::RetClip& net, const MicroBatch& mb, Precision precision);

}  // namespace retclip::train
