// CLIP VisualTransformer (OpenAI layout): patchify conv, CLS + positional embedding,
// ln_pre, pre-LN blocks with QuickGELU, ln_post on CLS, projection. Init as CLIP.
#include "retclip/model/vision.hpp"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <vector>

#include "ops.hpp"
#include "retclip/model/activation_checkpoint.hpp"
#include "retclip/util/error.hpp"

namespace retclip::model {

VisionAttentionImpl::VisionAttentionImpl(int64_t width, int64_t heads)
    : width_(width), heads_(heads) {
  RETCLIP_CHECK_USAGE(heads > 0 && width % heads == 0, "expected the ViT width (", width,
                      ") to be divisible by the number of heads (", heads,
                      "). HINT: set model.vision.heads to a divisor of the width");
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * width, width}));
  in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * width}));
  out_proj = register_module("out_proj", torch::nn::Linear(width, width));
}

torch::Tensor VisionAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), n = x.size(1), dh = width_ / heads_;
  // [B, N, 3D] -> 3 x [B, N, heads, dh] -> [B, heads, N, dh]. unbind (not 3 selects): its
  // backward stacks the three gradients into one [B, N, 3, heads, dh] buffer in one copy,
  // where each select's backward would zero-fill and add a full-size buffer.
  auto qkv = at::linear(x, in_proj_weight, in_proj_bias).view({b, n, 3, heads_, dh}).unbind(2);
  auto y = at::scaled_dot_product_attention(qkv[0].transpose(1, 2), qkv[1].transpose(1, 2),
                                            qkv[2].transpose(1, 2));
  return detail::linear(out_proj, y.transpose(1, 2).reshape({b, n, width_}));
}

VisionMlpImpl::VisionMlpImpl(int64_t width, int64_t hidden) {
  c_fc = register_module("c_fc", torch::nn::Linear(width, hidden));
  c_proj = register_module("c_proj", torch::nn::Linear(hidden, width));
}

torch::Tensor VisionMlpImpl::forward(const torch::Tensor& x) {
  auto h = detail::linear(c_fc, x);
  h = detail::quick_gelu(h);  // x * sigmoid(1.702 x)
  return detail::linear(c_proj, h);
}

ResidualAttentionBlockImpl::ResidualAttentionBlockImpl(int64_t width, int64_t heads,
                                                       int64_t mlp_hidden, double drop_path)
    : drop_path_rate(drop_path) {
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
  attn = register_module("attn", VisionAttention(width, heads));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
  mlp = register_module("mlp", VisionMlp(width, mlp_hidden));
}

torch::Tensor drop_path(const torch::Tensor& branch, double p, bool training) {
  if (!training || p <= 0.0) return branch;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(static_cast<size_t>(branch.dim()), 1);
  shape[0] = branch.size(0);
  auto mask = torch::empty(shape, branch.options()).bernoulli_(keep);
  return branch * mask.div_(keep);
}

torch::Tensor ResidualAttentionBlockImpl::forward(const torch::Tensor& x) {
  if (drop_path_rate <= 0.0 || !is_training()) {
    auto h = x + attn->forward(ln_1->forward(x));
    return h + mlp->forward(ln_2->forward(h));
  }
  auto h = x + drop_path(attn->forward(ln_1->forward(x)), drop_path_rate, true);
  return h + drop_path(mlp->forward(ln_2->forward(h)), drop_path_rate, true);
}

VisionTransformerImpl::VisionTransformerImpl(const VisionTransformerOptions& options)
    : options_(options) {
  const auto& o = options_;
  RETCLIP_CHECK_USAGE(o.patch_size() > 0 && o.image_size() % o.patch_size() == 0,
                      "expected the image size (", o.image_size(),
                      ") to be a multiple of the patch size (", o.patch_size(),
                      ") (keys model.vision.image_size / model.vision.patch_size)");
  RETCLIP_CHECK_USAGE(o.width() > 0 && o.layers() > 0 && o.embed_dim() > 0,
                      "expected positive ViT width, layers and embed_dim but got ", o.width(), ", ",
                      o.layers(), ", ", o.embed_dim());
  const int64_t w = o.width(), g = o.grid();
  conv1 = register_module(
      "conv1",
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(3, w, o.patch_size()).stride(o.patch_size()).bias(false)));
  class_embedding = register_parameter("class_embedding", torch::empty({w}));
  positional_embedding = register_parameter("positional_embedding", torch::empty({g * g + 1, w}));
  ln_pre = register_module("ln_pre", torch::nn::LayerNorm(torch::nn::LayerNormOptions({w})));
  transformer = register_module("transformer", std::make_shared<torch::nn::Module>());
  resblocks = transformer->register_module("resblocks", torch::nn::ModuleList());
  const auto hidden = static_cast<int64_t>(std::llround(w * o.mlp_ratio()));
  for (int64_t i = 0; i < o.layers(); ++i) {
    // timm's linear ramp of drop-path rates over the depth (first block 0).
    const double dp =
        o.layers() > 1 ? o.drop_path() * static_cast<double>(i) / (o.layers() - 1) : o.drop_path();
    resblocks->push_back(ResidualAttentionBlock(w, o.num_heads(), hidden, dp));
  }
  ln_post = register_module("ln_post", torch::nn::LayerNorm(torch::nn::LayerNormOptions({w})));
  proj = register_parameter("proj", torch::empty({w, o.embed_dim()}));
  reset_parameters();
}

void VisionTransformerImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double w = static_cast<double>(options_.width());
  const double scale = std::pow(w, -0.5);
  const double proj_std = scale * std::pow(2.0 * static_cast<double>(options_.layers()), -0.5);
  const double fc_std = std::pow(2.0 * w, -0.5);
  conv1->reset_parameters();
  class_embedding.normal_(0.0, scale);
  positional_embedding.normal_(0.0, scale);
  for (auto* ln : {&ln_pre, &ln_post}) (*ln)->reset_parameters();
  for (const auto& m : *resblocks) {
    auto* blk = m->as<ResidualAttentionBlockImpl>();
    blk->ln_1->reset_parameters();
    blk->ln_2->reset_parameters();
    blk->attn->in_proj_weight.normal_(0.0, scale);
    blk->attn->in_proj_bias.zero_();
    blk->attn->out_proj->weight.normal_(0.0, proj_std);
    blk->attn->out_proj->bias.zero_();
    blk->mlp->c_fc->reset_parameters();  // default bias init, as nn.Linear
    blk->mlp->c_fc->weight.normal_(0.0, fc_std);
    blk->mlp->c_proj->reset_parameters();
    blk->mlp->c_proj->weight.normal_(0.0, proj_std);
  }
  proj.normal_(0.0, scale);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  return torch::matmul(forward_cls(images), proj);  // [B, E]
}

torch::Tensor VisionTransformerImpl::forward_cls(const torch::Tensor& images) {
  const auto& o = options_;
  RETCLIP_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == o.image_size() &&
                    images.size(3) == o.image_size(),
                "expected images [B, 3, ", o.image_size(), ", ", o.image_size(), "] but got ",
                images.sizes(),
                ". HINT: data.image_size must equal the vision preset's image size");
  const int64_t b = images.size(0), w = o.width();
  auto x = conv1->forward(images).reshape({b, w, -1}).permute({0, 2, 1});  // [B, N-1, D]
  auto cls = class_embedding.to(x.dtype()).view({1, 1, w}).expand({b, 1, w});
  x = torch::cat({cls, x}, 1) + positional_embedding.to(x.dtype());  // [B, N, D]
  x = ln_pre->forward(x);
  for (const auto& m : *resblocks) {
    auto blk = std::dynamic_pointer_cast<ResidualAttentionBlockImpl>(m);
    if (o.grad_checkpointing()) {
      x = checkpoint_block([blk](const at::Tensor& in) { return blk->forward(in); }, x,
                           blk->parameters());
    } else {
      x = blk->forward(x);
    }
  }
  return ln_post->forward(x.select(1, 0));  // [B, D]
}

void VisionTransformerImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options_;
  stream << "retclip::model::VisionTransformer(image_size=" << o.image_size()
         << ", patch_size=" << o.patch_size() << ", width=" << o.width()
         << ", layers=" << o.layers() << ", heads=" << o.num_heads()
         << ", embed_dim=" << o.embed_dim() << ")";
}

}  // namespace retclip::model
