// Activation checkpointing as a custom autograd Function: forward runs the block
// without a graph; backward replays it (same RNG state) with a graph and
// differentiates the replay. LibTorch has no torch.utils.checkpoint, hence this file.
#include "retclip/model/activation_checkpoint.hpp"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

#include <array>
#include <mutex>

namespace retclip::model {
namespace {

at::Generator device_generator(const at::Tensor& x) {
  if (x.device().is_cpu()) return at::detail::getDefaultCPUGenerator();
  return at::globalContext().defaultGenerator(x.device());
}

/// Autocast as the forward saw it, for the device types retclip runs on; re-entered
/// around the recompute (as torch.utils.checkpoint does), so that under bf16 / fp16 the
/// replay computes in the same precision as the forward instead of fp32.
struct AutocastState {
  static constexpr std::array<at::DeviceType, 2> kTypes{at::kCUDA, at::kCPU};
  std::array<bool, 2> enabled{};
  std::array<at::ScalarType, 2> dtype{};
  bool cache = true;

  static AutocastState capture() {
    AutocastState s;
    for (size_t i = 0; i < kTypes.size(); ++i) {
      s.enabled[i] = at::autocast::is_autocast_enabled(kTypes[i]);
      s.dtype[i] = at::autocast::get_autocast_dtype(kTypes[i]);
    }
    s.cache = at::autocast::is_autocast_cache_enabled();
    return s;
  }
  void apply() const {
    for (size_t i = 0; i < kTypes.size(); ++i) {
      at::autocast::set_autocast_enabled(kTypes[i], enabled[i]);
      at::autocast::set_autocast_dtype(kTypes[i], dtype[i]);
    }
    at::autocast::set_autocast_cache_enabled(cache);
  }
};

/// Enters `want` for its lifetime and restores the state it found.
class AutocastRestore {
 public:
  explicit AutocastRestore(const AutocastState& want) : prev_(AutocastState::capture()) {
    want.apply();
    at::autocast::increment_nesting();
  }
  ~AutocastRestore() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    prev_.apply();
  }
  AutocastRestore(const AutocastRestore&) = delete;
  AutocastRestore& operator=(const AutocastRestore&) = delete;

 private:
  AutocastState prev_;
};

/// What backward needs besides the saved input: the block, the RNG and autocast state.
struct CheckpointState : torch::CustomClassHolder {
  BlockFn fn;
  at::Tensor rng_state;
  AutocastState autocast;
  std::vector<at::Tensor> params;  // the block's parameters (leaves: no reference cycle)
};

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            at::TensorList params,
                            const c10::intrusive_ptr<CheckpointState>& state) {
    {
      auto gen = device_generator(x);
      std::lock_guard<std::mutex> lock(gen.mutex());
      state->rng_state = gen.get_state();
    }
    state->autocast = AutocastState::capture();
    state->params = params.vec();
    ctx->save_for_backward({x});
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    at::NoGradGuard no_grad;
    return state->fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto state =
        c10::static_intrusive_pointer_cast<CheckpointState>(ctx->saved_data["state"].toCapsule());
    const at::Tensor x = ctx->get_saved_variables()[0];
    const std::vector<at::Tensor>& params = state->params;

    at::Tensor x_in = x.detach().requires_grad_(x.requires_grad());
    at::Tensor out;
    {
      auto gen = device_generator(x);
      at::Tensor now;
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        now = gen.get_state();
        gen.set_state(state->rng_state);
      }
      {
        c10::AutoGradMode enable(true);
        AutocastRestore autocast(state->autocast);
        out = state->fn(x_in);
      }
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(now);
    }

    std::vector<at::Tensor> wrt;
    std::vector<int64_t> slot;  // position in the backward output list
    if (x.requires_grad()) {
      wrt.push_back(x_in);
      slot.push_back(0);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].requires_grad()) {
        wrt.push_back(params[i]);
        slot.push_back(static_cast<int64_t>(i) + 1);
      }
    }
    torch::autograd::variable_list result(params.size() + 2);  // x, params..., state
    if (wrt.empty() || !out.requires_grad() || !grad_out[0].defined()) return result;
    auto grads = torch::autograd::grad({out}, wrt, {grad_out[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < grads.size(); ++i) result[slot[i]] = grads[i];
    return result;
  }
};

}  // namespace

at::Tensor checkpoint_block(const BlockFn& fn, const at::Tensor& x,
                            const std::vector<at::Tensor>& params) {
  bool any_grad = x.requires_grad();
  for (const auto& p : params) any_grad = any_grad || p.requires_grad();
  if (!c10::GradMode::is_enabled() || !any_grad) return fn(x);
  auto state = c10::make_intrusive<CheckpointState>();
  state->fn = fn;
  return CheckpointFunction::apply(x, at::TensorList(params), state);
}

}  // namespace retclip::model
