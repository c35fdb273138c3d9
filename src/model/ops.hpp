// Small tensor helpers shared by the model's .cpp files (internal header).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

namespace retclip::model::detail {

/// y = x Wᵀ + b through at::linear, which runs a contiguous [.., K] input as one addmm
/// (bias fused into the GEMM). torch::nn::Linear::forward (the C++ frontend's
/// F::linear) takes matmul + a separate bias add for inputs of more than 2 dimensions.
inline at::Tensor linear(const torch::nn::Linear& m, const at::Tensor& x) {
  return at::linear(x, m->weight, m->bias);
}

/// QuickGELU, x · sigmoid(1.702 x), computed as silu(1.702 x) / 1.702 (the same
/// function) with its own backward: dy/dx = silu'(1.702 x), one silu_backward pass over
/// the saved 1.702 x. Autograd of the plain expression runs five passes over the
/// [tokens, 4·width] activation in backward (two muls, sigmoid_backward, the scalar mul,
/// the sum of the two branches) and keeps x and sigmoid(1.702 x); this keeps one tensor
/// and runs one pass. Values equal the plain expression up to float rounding.
at::Tensor quick_gelu(const at::Tensor& x);

}  // namespace retclip::model::detail
