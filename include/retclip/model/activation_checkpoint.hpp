// Activation checkpointing for one transformer block: the forward keeps only the
// block input; backward re-runs the block with gradients, replaying the RNG state
// of the forward so that dropout masks are identical.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace retclip::model {

/// The block to checkpoint: a pure function of its input (and of `params`, which it
/// reads from its module).
using BlockFn = std::function<at::Tensor(const at::Tensor&)>;

/// Returns fn(x) without keeping the block's activations for backward. `params` are
/// the parameters fn reads (those that require grad receive their gradients through
/// this call). Falls back to fn(x) when grad mode is off or nothing requires grad.
/// The default generator of x's device (CPU, or the CUDA device of x) is saved before
/// the forward and restored around the recompute, so dropout is reproduced exactly; so
/// is the autocast state (enabled and dtype, CUDA and CPU), so a bf16 / fp16 forward is
/// recomputed in bf16 / fp16 as torch.utils.checkpoint does.
/// Shape: x any; output fn(x)'s.
at::Tensor checkpoint_block(const BlockFn& fn, const at::Tensor& x,
                            const std::vector<at::Tensor>& params);

}  // namespace retclip::model
