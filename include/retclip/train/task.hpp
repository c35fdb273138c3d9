// What one kind of training computes per micro-batch, as open_clip's task objects: the
// forward and the loss, and how a step's micro-batches accumulate. The step
// (train/step.hpp) does everything around it (zero grads, gradient sync, loss reduction,
// clipping, the optimizer, the fp16 loss scaler) and the loop (train/loop.hpp) everything
// around the step, the same for every task.
//
//   auto task = std::make_shared<train::ClassifierTask>(net, class_weight, Precision::kBf16);
//   train::StepContext ctx = train::make_step_context(task, *optimizer, comm, step_options);
//   train::StepResult r = train::train_step(ctx, batch, lr, scaler);
//
//   ContrastiveTask  RetClip + tripartite loss (pretraining); negatives span every
//                    micro-batch of the step (and every rank), so it caches features
//   ClassifierTask   Classifier + CE / BCE on (soft) targets (fine-tuning); plain
//                    accumulation of its row-mean loss
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "retclip/loss/tripartite.hpp"
#include "retclip/model/autocast.hpp"
#include "retclip/model/classifier.hpp"
#include "retclip/model/retclip.hpp"
#include "retclip/train/step.hpp"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace retclip::train {

class Task {
 public:
  virtual ~Task() = default;

  /// The trained module: its parameters and buffers are broadcast from rank 0, its
  /// gradients all-reduced, its weights checkpointed.
  virtual torch::nn::Module& module() = 0;

  /// Forward and loss of one micro-batch (on the device, under the task's precision).
  /// `total` keeps its graph; the other fields are detached.
  virtual StepLosses forward_loss(const MicroBatch& mb, dist::Comm& comm) = 0;

  /// Forward + backward over a step's micro-batches: gradients summed into .grad, the
  /// gradient all-reduce armed for the last backward (backward_micro), the losses
  /// returned detached. Default: accumulate_micro_batches (plain accumulation).
  virtual StepLosses forward_backward(const std::vector<MicroBatch>& micro, double loss_scale,
                                      const StepComm& comm, StepPhases* phases);

  /// After an optimizer step that was made (not skipped as non-finite).
  virtual void after_update() {}
};

/// Pretraining: RetClip's six embeddings and the tripartite loss over the global batch.
class ContrastiveTask : public Task {
 public:
  ContrastiveTask(model::RetClip net, loss::TripartiteLossOptions loss, model::Precision precision,
                  double logit_scale_max);

  torch::nn::Module& module() override;
  StepLosses forward_loss(const MicroBatch& mb, dist::Comm& comm) override;
  /// Full-batch negatives with cached features (step.hpp's forward_backward).
  StepLosses forward_backward(const std::vector<MicroBatch>& micro, double loss_scale,
                              const StepComm& comm, StepPhases* phases) override;
  /// Clamps the logit scales to [0, loss.logit_scale_max].
  void after_update() override;

  model::RetClip& net() { return net_; }
  const loss::TripartiteLossOptions& loss() const { return loss_; }
  model::Precision precision() const { return precision_; }

 private:
  model::RetClip net_;
  loss::TripartiteLossOptions loss_;
  model::Precision precision_;
  double logit_scale_max_;
};

/// Fine-tuning: the classifier's logits and loss::classification_loss against the batch's
/// (smoothed, mixed) targets, class weights applied.
class ClassifierTask : public Task {
 public:
  /// `class_weight` [C] on the device, or undefined (every class 1).
  ClassifierTask(model::Classifier net, at::Tensor class_weight, model::Precision precision);

  torch::nn::Module& module() override;
  StepLosses forward_loss(const MicroBatch& mb, dist::Comm& comm) override;

  model::Classifier& net() { return net_; }
  model::Precision precision() const { return precision_; }

 private:
  model::Classifier net_;
  at::Tensor class_weight_;
  model::Precision precision_;
};

}  // namespace retclip::train
