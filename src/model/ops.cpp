// Fused tensor helpers of the model (see ops.hpp).
#include "ops.hpp"

#include <torch/autograd.h>

namespace retclip::model::detail {
namespace {

constexpr double kQuickGeluAlpha = 1.702;

struct QuickGeluFn : torch::autograd::Function<QuickGeluFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    auto z = x * kQuickGeluAlpha;
    ctx->save_for_backward({z});
    return at::silu(z).mul_(1.0 / kQuickGeluAlpha);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    // d/dx [silu(a x) / a] = silu'(a x).
    return {at::silu_backward(grad[0], ctx->get_saved_variables()[0])};
  }
};

}  // namespace

at::Tensor quick_gelu(const at::Tensor& x) { return QuickGeluFn::apply(x); }

}  // namespace retclip::model::detail
