// Comm: TCPStore rendezvous, backend choice, blocking collectives with named errors,
// and the all-gather with gradient.
#include "retclip/dist/comm.hpp"

#include "backends.hpp"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <ATen/ATen.h>

#include <chrono>
#include <map>

#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"

namespace retclip::dist {
namespace {

std::chrono::milliseconds to_ms(double s) {
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0));
}

class Timer {
 public:
  explicit Timer(double& acc) : acc_(acc), t0_(std::chrono::steady_clock::now()) {}
  ~Timer() {
    acc_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  double& acc_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

std::shared_ptr<Comm> Comm::init(const Env& env, const at::Device& device,
                                 const CommOptions& options) {
  RETCLIP_CHECK_USAGE(options.backend == "auto" || options.backend == "gloo" ||
                          options.backend == "nccl",
                      "dist.backend: expected auto, gloo or nccl but got '", options.backend, "'");
  RETCLIP_CHECK_USAGE(options.timeout_s > 0, "dist.timeout_s: expected > 0 but got ",
                      options.timeout_s);
  std::shared_ptr<Comm> c(new Comm());
  c->rank_ = env.rank;
  c->world_ = env.world;
  c->timeout_s_ = options.timeout_s;
  std::string backend = options.backend;
  if (backend == "auto") backend = device.is_cuda() ? "nccl" : "gloo";
  RETCLIP_CHECK_USAGE(backend != "nccl" || device.is_cuda(),
                      "dist.backend=nccl needs train.device cuda; this rank runs on ", device.str());
  RETCLIP_CHECK_USAGE(backend != "nccl" || nccl_available(),
                      "dist.backend=nccl: this retclip build has no NCCL (nccl.h was not found "
                      "when it was configured). HINT: dist.backend=gloo, or rebuild with the "
                      "nvidia-nccl headers");
  c->backend_name_ = backend;

  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = static_cast<size_t>(env.world);
  so.waitWorkers = true;
  so.timeout = to_ms(options.timeout_s);
  try {
    c->store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    throw Error(str_cat("rank ", env.rank, ": rendezvous at ", env.master_addr, ":",
                        env.master_port, " failed (", env.world, " ranks expected, timeout ",
                        options.timeout_s, " s): ", e.what(),
                        "\nHINT: check MASTER_ADDR/MASTER_PORT, that every rank was started, "
                        "and that the port is free on rank 0's host"));
  }
  try {
    c->backend_ = backend == "nccl"
                      ? make_nccl_backend(c->store_, env.rank, env.world, to_ms(options.timeout_s))
                      : make_gloo_backend(c->store_, env.rank, env.world, to_ms(options.timeout_s));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(str_cat("rank ", env.rank, ": creating the ", backend, " process group failed: ",
                        e.what()));
  }
  return c;
}

std::shared_ptr<Comm> Comm::single() {
  std::shared_ptr<Comm> c(new Comm());
  c->backend_name_ = "single process";
  return c;
}

std::shared_ptr<Comm> Comm::from_env(const Env& env, const at::Device& device,
                                     const CommOptions& options) {
  return env.distributed() ? init(env, device, options) : single();
}

Comm::Comm() = default;
Comm::~Comm() = default;

void Comm::fail(const std::string& what, const std::exception& e) const {
  std::string msg = e.what();
  const size_t nl = msg.find('\n');
  if (nl != std::string::npos && nl > 0) msg = msg.substr(0, nl);  // drop c10's backtrace
  throw Error(str_cat("rank ", rank_, "/", world_, ": ", backend_name_, " ", what,
                      " failed or timed out (dist.timeout_s ", timeout_s_, "): ", msg,
                      "\nHINT: another rank probably stopped or is stuck; see its log"));
}

void Comm::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  Timer t(comm_s_);
  try {
    work->wait(to_ms(timeout_s_));
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

// c10d's list forms mean "one tensor per device"; several tensors of one process travel
// as one flat buffer per dtype instead.
void Comm::broadcast_(std::vector<at::Tensor>& tensors, int root) {
  if (tensors.empty() || world_ == 1) return;
  std::map<at::ScalarType, std::vector<size_t>> by_dtype;
  for (size_t i = 0; i < tensors.size(); ++i) by_dtype[tensors[i].scalar_type()].push_back(i);
  for (const auto& [dtype, idx] : by_dtype) {
    std::vector<at::Tensor> flat_parts;
    for (size_t i : idx) flat_parts.push_back(tensors[i].reshape(-1));
    std::vector<at::Tensor> flat{at::cat(flat_parts)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = to_ms(timeout_s_);
    c10::intrusive_ptr<c10d::Work> w;
    try {
      w = backend_->broadcast(flat, o);
    } catch (const std::exception& e) {
      fail("broadcast", e);
    }
    wait(w, "broadcast");
    int64_t off = 0;
    for (size_t i : idx) {
      at::NoGradGuard no_grad;
      tensors[i].copy_(flat[0].narrow(0, off, tensors[i].numel()).view(tensors[i].sizes()));
      off += tensors[i].numel();
    }
  }
}

c10::intrusive_ptr<c10d::Work> Comm::all_reduce_async(std::vector<at::Tensor>& tensors) {
  RETCLIP_CHECK(world_ > 1, "all_reduce_async needs a process group of several ranks");
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = to_ms(timeout_s_);
  try {
    return backend_->allreduce(tensors, o);
  } catch (const std::exception& e) {
    fail("all_reduce", e);
  }
}

void Comm::all_reduce_(std::vector<at::Tensor>& tensors) {
  for (auto& t : tensors) all_reduce_(t);
}

void Comm::all_reduce_(at::Tensor& tensor) {
  if (world_ == 1) return;
  std::vector<at::Tensor> v{tensor};
  auto w = all_reduce_async(v);
  wait(w, "all_reduce");
}

at::Tensor Comm::all_gather(const at::Tensor& t) {
  if (world_ == 1) return t;
  at::Tensor in = t.contiguous();
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < world_; ++r) out[0].push_back(at::empty_like(in));
  std::vector<at::Tensor> inputs{in};
  c10d::AllgatherOptions o;
  o.timeout = to_ms(timeout_s_);
  c10::intrusive_ptr<c10d::Work> w;
  try {
    w = backend_->allgather(out, inputs, o);
  } catch (const std::exception& e) {
    fail("all_gather", e);
  }
  wait(w, "all_gather");
  return at::cat(out[0], 0);
}

void Comm::barrier() {
  if (world_ == 1) return;
  c10d::BarrierOptions o;
  o.timeout = to_ms(timeout_s_);
  c10::intrusive_ptr<c10d::Work> w;
  try {
    w = backend_->barrier(o);
  } catch (const std::exception& e) {
    fail("barrier", e);
  }
  wait(w, "barrier");
}

// ---- all-gather with gradient ------------------------------------------------------

namespace {

struct AllGatherWithGrad : public torch::autograd::Function<AllGatherWithGrad> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            int64_t comm_address) {
    Comm* comm = reinterpret_cast<Comm*>(comm_address);
    ctx->saved_data["comm"] = comm_address;
    ctx->saved_data["rows"] = x.size(0);
    return comm->all_gather(x.detach());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    Comm* comm = reinterpret_cast<Comm*>(ctx->saved_data["comm"].toInt());
    const int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor g = grads[0].contiguous().clone();
    comm->all_reduce_(g);
    return {g.narrow(0, comm->rank() * rows, rows), at::Tensor()};
  }
};

}  // namespace

at::Tensor all_gather_with_grad(Comm& comm, const at::Tensor& x) {
  if (comm.world() == 1) return x;
  return AllGatherWithGrad::apply(x, reinterpret_cast<int64_t>(&comm));
}

}  // namespace retclip::dist
