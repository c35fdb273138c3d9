// Data-parallel gradient averaging as PyTorch DDP does it: parameters are grouped into
// buckets of about `bucket_mb` (in reverse registration order, roughly the order
// backward produces them); a post-hook on each parameter's gradient accumulator marks
// it ready, and a bucket whose parameters are all ready is flattened and all-reduced
// asynchronously while backward goes on. Buckets launch in index order on every rank,
// so the collectives match. finish() waits, divides by the world size and writes the
// averages back into .grad.
//
//   dist::GradSync sync(comm, trainable_params, 25.0);
//   for (micro-batch j) { sync.arm(j == last); loss_j.backward(); }
//   sync.finish();   // .grad now holds the average over ranks
//
// With accumulation only the last micro-batch's backward is armed (the hooks then see
// the accumulated gradient). Frozen parameters (requires_grad false) are left out.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <cstdint>
#include <memory>
#include <vector>

#include "retclip/dist/comm.hpp"

namespace torch::autograd {
struct Node;
}

namespace retclip::dist {

class GradSync {
 public:
  GradSync(std::shared_ptr<Comm> comm, const std::vector<at::Tensor>& params, double bucket_mb);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  /// Arms (or disarms) the hooks for the next backward pass.
  void arm(bool on);
  /// Launches the buckets not yet launched (gradients of parameters that received none
  /// count as zero), waits for all, averages, and disarms. No-op when nothing is armed.
  void finish();

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  /// Buckets launched from inside backward (before finish()) in the last armed pass.
  int64_t launched_in_backward() const { return launched_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;  ///< indices into params_
    int64_t numel = 0;
    size_t ready = 0;
    bool launched = false;
    at::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };
  void on_ready(size_t param);
  void launch(size_t bucket);

  std::shared_ptr<Comm> comm_;
  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_;
  std::vector<Bucket> buckets_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<bool> ready_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  int64_t launched_in_backward_ = 0;
};

}  // namespace retclip::dist
