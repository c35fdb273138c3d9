// The image tower: CLIP's VisualTransformer (OpenAI layout), shared by both eyes.
// Parameter names are RET-CLIP's (`conv1`, `class_embedding`, `transformer.resblocks.{i}`,
// `ln_post`, `proj`) so weights move both ways with the PyTorch reference.
//
//   model::VisionTransformer vit(model::vision_preset("vit-tiny"));
//   auto feats = vit->forward(images);   // [B, 3, 64, 64] -> [B, 128]
//
// Legend: B batch, N tokens (patches + CLS), D width, E embed.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

namespace retclip::model {

struct VisionTransformerOptions {
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, width) = 768;
  TORCH_ARG(int64_t, layers) = 12;
  /// 0 = width / 64 (CLIP's rule).
  TORCH_ARG(int64_t, heads) = 0;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  TORCH_ARG(int64_t, embed_dim) = 512;
  /// Recompute each block in backward instead of keeping its activations.
  TORCH_ARG(bool, grad_checkpointing) = false;
  /// Stochastic depth (timm's drop_path_rate): in training, block i skips its attention
  /// and MLP branches for a whole sample with probability drop_path * i / (layers - 1)
  /// (a linear ramp from 0, as timm) and the kept branches are scaled by 1 / (1 - p).
  /// 0 (default) = off; never active in eval mode.
  TORCH_ARG(double, drop_path) = 0.0;

 public:
  int64_t num_heads() const { return heads_ > 0 ? heads_ : width_ / 64; }
  int64_t grid() const { return image_size_ / patch_size_; }
};

/// Multi-head self-attention with PyTorch MultiheadAttention's parameter names
/// (`in_proj_weight` [3D, D], `in_proj_bias` [3D], `out_proj`).
class VisionAttentionImpl : public torch::nn::Module {
 public:
  VisionAttentionImpl(int64_t width, int64_t heads);
  /// Shape: x [B, N, D] -> [B, N, D].
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};

 private:
  int64_t width_, heads_;
};
TORCH_MODULE(VisionAttention);

/// CLIP MLP: `c_fc` -> QuickGELU -> `c_proj`.
class VisionMlpImpl : public torch::nn::Module {
 public:
  VisionMlpImpl(int64_t width, int64_t hidden);
  /// Shape: x [B, N, D] -> [B, N, D].
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(VisionMlp);

/// Pre-LN residual block: x + attn(ln_1(x)); x + mlp(ln_2(x)); in training each branch is
/// dropped per sample with probability `drop_path` (stochastic depth, see drop_path()).
class ResidualAttentionBlockImpl : public torch::nn::Module {
 public:
  ResidualAttentionBlockImpl(int64_t width, int64_t heads, int64_t mlp_hidden,
                             double drop_path = 0.0);
  /// Shape: x [B, N, D] -> [B, N, D].
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  VisionAttention attn{nullptr};
  VisionMlp mlp{nullptr};
  double drop_path_rate = 0.0;
};
TORCH_MODULE(ResidualAttentionBlock);

/// timm's drop_path: each sample's `branch` [B, ...] is zeroed with probability p and
/// otherwise scaled by 1 / (1 - p) (one Bernoulli draw per sample from the default
/// generator); the identity when !training or p == 0.
torch::Tensor drop_path(const torch::Tensor& branch, double p, bool training);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(const VisionTransformerOptions& options);

  /// Re-draws every parameter with CLIP's initialisation (uses the global RNG).
  void reset_parameters();

  /// Projected CLS feature (not normalised): ln_post(x[:, 0]) @ proj.
  /// Shape: images [B, 3, S, S] (S = image_size) -> [B, E].
  torch::Tensor forward(const torch::Tensor& images);
  /// CLS feature before the projection: ln_post(x[:, 0]) (what CLIP probes call the
  /// pre-projection feature). Shape: images [B, 3, S, S] -> [B, D].
  torch::Tensor forward_cls(const torch::Tensor& images);

  void pretty_print(std::ostream& stream) const override;

  const VisionTransformerOptions& options() const { return options_; }
  void set_grad_checkpointing(bool enabled) { options_.grad_checkpointing(enabled); }

  torch::nn::Conv2d conv1{nullptr};
  torch::Tensor class_embedding, positional_embedding, proj;
  torch::nn::LayerNorm ln_pre{nullptr}, ln_post{nullptr};
  /// Holds `resblocks` (keys transformer.resblocks.{i}.*).
  std::shared_ptr<torch::nn::Module> transformer;
  torch::nn::ModuleList resblocks{nullptr};

 private:
  VisionTransformerOptions options_;
};
TORCH_MODULE(VisionTransformer);

}  // namespace retclip::model
