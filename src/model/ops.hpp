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

}  // namespace retclip::model::detail
