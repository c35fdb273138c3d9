// GradSync: bucketed, backward-overlapped gradient all-reduce (see grad_sync.hpp).
#include "retclip/dist/grad_sync.hpp"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "retclip/util/error.hpp"

namespace retclip::dist {

GradSync::GradSync(std::shared_ptr<Comm> comm, const std::vector<at::Tensor>& params,
                   double bucket_mb)
    : comm_(std::move(comm)) {
  RETCLIP_CHECK(comm_, "GradSync needs a process group");
  if (comm_->world() == 1) return;  // one process: gradients are already the average
  for (const auto& p : params)
    if (p.requires_grad()) params_.push_back(p);
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024));
  bucket_of_.assign(params_.size(), 0);
  ready_.assign(params_.size(), false);
  // Reverse registration order approximates the order backward finishes parameters.
  // A bucket holds one dtype and one device.
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    bool fresh = buckets_.empty();
    if (!fresh) {
      const Bucket& b = buckets_.back();
      const at::Tensor& q = params_[b.params.front()];
      fresh = q.scalar_type() != p.scalar_type() || q.device() != p.device() ||
              (b.numel * static_cast<int64_t>(q.element_size()) + bytes > cap);
    }
    if (fresh) buckets_.emplace_back();
    buckets_.back().params.push_back(k);
    buckets_.back().numel += p.numel();
    bucket_of_[k] = buckets_.size() - 1;
  }
  // The accumulator nodes must outlive the hooks: keep them.
  for (size_t k = 0; k < params_.size(); ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[k]);
    RETCLIP_CHECK(acc, "GradSync: parameter ", k, " has no gradient accumulator");
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const torch::autograd::variable_list& outputs,
                  const torch::autograd::variable_list&) {
          if (armed_) on_ready(k);
          return outputs;
        }));
    accumulators_.push_back(std::move(acc));
  }
}

GradSync::~GradSync() {
  // The hooks capture `this`: disarm them for any backward that still runs.
  armed_ = false;
}

void GradSync::arm(bool on) {
  armed_ = on && comm_->world() > 1;
  if (!on) return;
  for (auto& b : buckets_) {
    b.ready = 0;
    b.launched = false;
    b.work.reset();
  }
  std::fill(ready_.begin(), ready_.end(), false);
  next_launch_ = 0;
  launched_in_backward_ = 0;
}

void GradSync::on_ready(size_t k) {
  if (ready_[k]) return;  // a parameter reached twice in one pass: counted once
  ready_[k] = true;
  Bucket& b = buckets_[bucket_of_[k]];
  ++b.ready;
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].ready == buckets_[next_launch_].params.size()) {
    launch(next_launch_++);
    ++launched_in_backward_;
  }
}

void GradSync::launch(size_t i) {
  Bucket& b = buckets_[i];
  const at::Tensor& first = params_[b.params.front()];
  std::vector<at::Tensor> parts;
  parts.reserve(b.params.size());
  for (size_t k : b.params) {
    const at::Tensor& p = params_[k];
    parts.push_back(p.grad().defined() ? p.grad().reshape(-1)
                                       : at::zeros({p.numel()}, first.options()));
  }
  b.flat = at::cat(parts);
  std::vector<at::Tensor> t{b.flat};
  b.work = comm_->all_reduce_async(t);
  b.launched = true;
}

void GradSync::finish() {
  if (!armed_) return;
  armed_ = false;
  while (next_launch_ < buckets_.size()) launch(next_launch_++);
  const double inv = 1.0 / comm_->world();
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    comm_->wait(b.work, fmt::format("gradient all_reduce (bucket {}/{})", i + 1, buckets_.size()));
    b.flat.mul_(inv);
    int64_t off = 0;
    for (size_t k : b.params) {
      at::Tensor& p = params_[k];
      at::Tensor avg = b.flat.narrow(0, off, p.numel()).view(p.sizes());
      off += p.numel();
      if (p.grad().defined())
        p.mutable_grad().copy_(avg);
      else
        p.mutable_grad() = avg.clone();
    }
    b.work.reset();
    b.flat = at::Tensor();
  }
}

}  // namespace retclip::dist
