// A process group over LibTorch's c10d: TCPStore rendezvous at MASTER_ADDR:MASTER_PORT
// (rank 0 serves it), then ProcessGroupNCCL on CUDA or ProcessGroupGloo on CPU. The
// collectives block until done and turn a failure or timeout into an Error naming this
// rank, the collective and the timeout. Time spent blocked in them is accumulated
// (comm_seconds) for the progress line and `retclip bench`.
//
//   auto comm = dist::Comm::init(env, device, {.backend = "auto", .timeout_s = 600});
//   comm->all_reduce_({loss_sum});            // in place, SUM
//   at::Tensor all = dist::all_gather_with_grad(*comm, features);   // [world*B, E]
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <memory>
#include <string>
#include <vector>

#include "retclip/dist/env.hpp"

// c10d's types stay out of this header (their headers cost seconds per file that includes
// them); src/dist includes them where the process group is used.
namespace c10d {
class Backend;
class Store;
class Work;
}  // namespace c10d

namespace retclip::dist {

struct CommOptions {
  std::string backend = "auto";  ///< auto (NCCL on CUDA, Gloo on CPU) | gloo | nccl
  double timeout_s = 600;        ///< per collective, and for the rendezvous
};

class Comm {
 public:
  /// Joins the group described by env (rendezvous through a TCPStore). Throws Error
  /// naming MASTER_ADDR:MASTER_PORT when the rendezvous times out.
  static std::shared_ptr<Comm> init(const Env& env, const at::Device& device,
                                    const CommOptions& options);
  /// One process (world 1, rank 0): every collective is the identity, so callers need
  /// no separate single-process path.
  static std::shared_ptr<Comm> single();
  /// init() when env describes several ranks, single() otherwise.
  static std::shared_ptr<Comm> from_env(const Env& env, const at::Device& device,
                                        const CommOptions& options);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  const std::string& backend_name() const { return backend_name_; }
  double timeout_s() const { return timeout_s_; }

  /// In-place collectives (every rank calls them in the same order). Tensors of any
  /// shapes; a list is sent as one flat buffer per dtype (broadcast) or one by one.
  void broadcast_(std::vector<at::Tensor>& tensors, int root = 0);
  void all_reduce_(std::vector<at::Tensor>& tensors);  ///< SUM
  void all_reduce_(at::Tensor& tensor);                ///< SUM
  /// Equal-shaped tensors from every rank, concatenated along dim 0 in rank order.
  at::Tensor all_gather(const at::Tensor& t);
  void barrier();

  /// Asynchronous SUM all-reduce of one tensor (a one-element list); finish with wait().
  /// Several ranks only (GradSync does nothing in a single process).
  c10::intrusive_ptr<c10d::Work> all_reduce_async(std::vector<at::Tensor>& tensors);
  /// Waits for `work`; `what` names the collective in the error on failure or timeout.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);

  /// Seconds spent blocked in collectives since construction (or the last reset).
  double comm_seconds() const { return comm_s_; }
  void reset_comm_seconds() { comm_s_ = 0; }

 private:
  Comm();
  [[noreturn]] void fail(const std::string& what, const std::exception& e) const;

  int rank_ = 0, world_ = 1;
  double timeout_s_ = 600;
  std::string backend_name_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  double comm_s_ = 0;
};

/// All-gather along dim 0 that autograd can differentiate: the backward pass sums the
/// gradient of the gathered tensor over all ranks and returns this rank's rows, so a
/// loss over the global batch trains every rank's encoders (OpenCLIP's
/// gather_with_grad). Shape: x [B, ...] on every rank -> [world*B, ...].
at::Tensor all_gather_with_grad(Comm& comm, const at::Tensor& x);

}  // namespace retclip::dist
