// The tasks (see task.hpp): the contrastive task of pretraining and the classifier task
// of fine-tuning, each one micro-batch's forward and loss.
#include "retclip/train/task.hpp"

#include <torch/torch.h>

#include "retclip/loss/classification.hpp"

namespace retclip::train {

StepLosses Task::forward_backward(const std::vector<MicroBatch>& micro, double loss_scale,
                                  const StepComm& comm, StepPhases* phases) {
  return accumulate_micro_batches(*this, micro, loss_scale, comm, phases);
}

// ---- contrastive -------------------------------------------------------------------

ContrastiveTask::ContrastiveTask(model::RetClip net, loss::TripartiteLossOptions loss,
                                 model::Precision precision, double logit_scale_max)
    : net_(std::move(net)),
      loss_(std::move(loss)),
      precision_(precision),
      logit_scale_max_(logit_scale_max) {}

torch::nn::Module& ContrastiveTask::module() {
  return *net_;
}

StepLosses ContrastiveTask::forward_loss(const MicroBatch& mb, dist::Comm& comm) {
  model::Embeddings e;
  {
    model::AutocastScope scope(precision_, mb.tokens.device());
    e = to_float(net_->forward(mb.left, mb.right, mb.tokens, mb.has_left, mb.has_right));
  }
  if (loss_.duplicates_positive()) e.report_id = level_report_ids(mb);
  const loss::LossOutput out = step_loss(e, loss_, comm);
  StepLosses s;
  s.total = out.total;
  for (model::Level l : model::kLevels) {
    s.loss[l] = out.level[l].loss.detach();
    s.acc_i2t[l] = out.level[l].acc_i2t;
    s.acc_t2i[l] = out.level[l].acc_t2i;
  }
  return s;
}

StepLosses ContrastiveTask::forward_backward(const std::vector<MicroBatch>& micro,
                                             double loss_scale, const StepComm& comm,
                                             StepPhases* phases) {
  return train::forward_backward(net_, micro, loss_, precision_, loss_scale, comm, phases);
}

void ContrastiveTask::after_update() {
  torch::NoGradGuard ng;
  for (model::Level l : model::kLevels) net_->logit_scale_of(l).clamp_(0, logit_scale_max_);
}

// ---- classifier --------------------------------------------------------------------

ClassifierTask::ClassifierTask(model::Classifier net, at::Tensor class_weight,
                               model::Precision precision)
    : net_(std::move(net)), class_weight_(std::move(class_weight)), precision_(precision) {}

torch::nn::Module& ClassifierTask::module() {
  return *net_;
}

StepLosses ClassifierTask::forward_loss(const MicroBatch& mb, dist::Comm&) {
  at::Tensor logits;
  {
    model::AutocastScope scope(precision_, mb.left.device());
    logits = net_->forward(mb.left, mb.right, mb.has_left, mb.has_right, mb.is_right);
  }
  StepLosses s;
  s.total =
      loss::classification_loss(logits, mb.targets, net_->options().multi_label(), class_weight_);
  return s;
}

}  // namespace retclip::train
