// The image tower, shared by both eyes: CLIP's VisualTransformer (OpenAI layout) by default,
// and timm's plain ViT family (RETFound / MAE, DINOv2 with registers and layer scale) as
// options of the same module. Parameter names are RET-CLIP's (`conv1`, `class_embedding`,
// `transformer.resblocks.{i}`, `ln_post`, `proj`) so weights move both ways with the PyTorch
// reference; the timm options add `conv1.bias`, `register_embedding`, `ls_1/ls_2.gamma` and
// `fc_norm` (docs/WEIGHTS.md has the map to timm's names).
//
//   model::VisionTransformer vit(model::vision_preset("vit-tiny"));
//   auto feats = vit->forward(images);   // [B, 3, 64, 64] -> [B, 128]
//
//   auto o = model::vision_preset("vit-tiny");   // a RETFound-shaped tower
//   o.activation(model::VisionActivation::kGelu).patch_bias(true).norm_pre(false)
//    .pool(model::VisionPool::kAvg).fc_norm(true).norm_eps(1e-6);
//
// Legend: B batch, N tokens (prefix tokens + patches), P prefix tokens (class + registers),
// D width, E embed.
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

/// The MLP's activation: CLIP's QuickGELU, x * sigmoid(1.702 x), or exact (erf) GELU (timm).
enum class VisionActivation { kQuickGelu, kGelu };

/// How the tokens become one feature: the class token (`token`), or the mean of the patch
/// tokens without the class and register tokens (`avg`, timm's global_pool='avg').
enum class VisionPool { kToken, kAvg };

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

  // --- the architecture (defaults: CLIP's; timm's plain ViT and DINOv2 as options) ---
  TORCH_ARG(VisionActivation, activation) = VisionActivation::kQuickGelu;
  /// A bias on the patch embedding (`conv1.bias`; timm ViTs without norm_pre have one).
  TORCH_ARG(bool, patch_bias) = false;
  /// LayerNorm `ln_pre` after the embeddings (CLIP; timm's pre_norm / norm_pre).
  TORCH_ARG(bool, norm_pre) = true;
  /// A learned class token `class_embedding` [D] ahead of the patches.
  TORCH_ARG(bool, class_token) = true;
  /// Learned register tokens `register_embedding` [R, D] after the class token (DINOv2).
  TORCH_ARG(int64_t, register_tokens) = 0;
  /// The positional embedding has rows for the class and register tokens too (CLIP, timm's
  /// default); false: rows for the patches only, the prefix tokens are appended after it is
  /// added (timm's no_embed_class, DINOv2 with registers).
  TORCH_ARG(bool, pos_embed_prefix) = true;
  /// Layer scale (`ls_1.gamma`, `ls_2.gamma` [D] per block, multiplying each branch):
  /// 0 = none, else the initial value (timm's init_values; DINOv2 1e-5).
  TORCH_ARG(double, layer_scale) = 0.0;
  TORCH_ARG(VisionPool, pool) = VisionPool::kToken;
  /// Where the final LayerNorm sits: false = `ln_post` on every token before pooling (CLIP,
  /// timm's `norm`); true = `fc_norm` on the pooled feature (timm's fc_norm, RETFound).
  TORCH_ARG(bool, fc_norm) = false;
  /// A bias on the attention's q, k, v projection (`attn.in_proj_bias`).
  TORCH_ARG(bool, qkv_bias) = true;
  /// Epsilon of every LayerNorm (CLIP 1e-5, timm's plain ViTs 1e-6).
  TORCH_ARG(double, norm_eps) = 1e-5;

 public:
  int64_t num_heads() const { return heads_ > 0 ? heads_ : width_ / 64; }
  int64_t grid() const { return image_size_ / patch_size_; }
  /// Class token + register tokens.
  int64_t prefix_tokens() const { return (class_token_ ? 1 : 0) + register_tokens_; }
  /// Rows of `positional_embedding`: grid^2, plus the prefix tokens when pos_embed_prefix.
  int64_t pos_embed_rows() const {
    return grid() * grid() + (pos_embed_prefix_ ? prefix_tokens() : 0);
  }
};

/// "quick_gelu" / "gelu"; "token" / "avg" (the config's and timm's names).
const char* vision_activation_name(VisionActivation a);
const char* vision_pool_name(VisionPool p);
/// Throws UsageError naming `key` and the valid names.
VisionActivation parse_vision_activation(const std::string& name, const std::string& key);
VisionPool parse_vision_pool(const std::string& name, const std::string& key);

/// Multi-head self-attention with PyTorch MultiheadAttention's parameter names
/// (`in_proj_weight` [3D, D], `in_proj_bias` [3D] unless !qkv_bias, `out_proj`).
class VisionAttentionImpl : public torch::nn::Module {
 public:
  VisionAttentionImpl(int64_t width, int64_t heads, bool qkv_bias = true);
  /// Shape: x [B, N, D] -> [B, N, D].
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};

 private:
  int64_t width_, heads_;
};
TORCH_MODULE(VisionAttention);

/// CLIP MLP: `c_fc` -> QuickGELU (or GELU) -> `c_proj`.
class VisionMlpImpl : public torch::nn::Module {
 public:
  VisionMlpImpl(int64_t width, int64_t hidden,
                VisionActivation activation = VisionActivation::kQuickGelu);
  /// Shape: x [B, N, D] -> [B, N, D].
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};

 private:
  VisionActivation activation_;
};
TORCH_MODULE(VisionMlp);

/// Pre-LN residual block: x + ls_1 * attn(ln_1(x)); x + ls_2 * mlp(ln_2(x)) (the layer
/// scales only when `o.layer_scale()` > 0); in training each branch is dropped per sample
/// with probability `drop_path` (stochastic depth, see drop_path()). Width, heads, qkv bias,
/// activation and LayerNorm eps come from `o`.
class ResidualAttentionBlockImpl : public torch::nn::Module {
 public:
  ResidualAttentionBlockImpl(const VisionTransformerOptions& o, int64_t mlp_hidden,
                             double drop_path = 0.0);
  /// Shape: x [B, N, D] -> [B, N, D].
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  VisionAttention attn{nullptr};
  VisionMlp mlp{nullptr};
  /// `ls_1.gamma`, `ls_2.gamma` [D]; undefined without layer scale.
  torch::Tensor ls_1_gamma, ls_2_gamma;
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

  /// Projected pooled feature (not normalised): forward_pooled(images) @ proj.
  /// Shape: images [B, 3, S, S] (S = image_size) -> [B, E].
  torch::Tensor forward(const torch::Tensor& images);
  /// The pooled feature before the projection (what CLIP probes call the pre-projection
  /// feature, timm's forward_head(pre_logits=True)): ln_post(x[:, 0]) for CLIP; with
  /// pool=avg the mean of the patch tokens, with fc_norm normalised after pooling.
  /// Shape: images [B, 3, S, S] -> [B, D].
  torch::Tensor forward_pooled(const torch::Tensor& images);

  void pretty_print(std::ostream& stream) const override;

  const VisionTransformerOptions& options() const { return options_; }
  void set_grad_checkpointing(bool enabled) { options_.grad_checkpointing(enabled); }

  torch::nn::Conv2d conv1{nullptr};
  /// class_embedding [D] (undefined without a class token), register_embedding [R, D]
  /// (undefined without registers), positional_embedding [pos_embed_rows(), D], proj [D, E].
  torch::Tensor class_embedding, register_embedding, positional_embedding, proj;
  /// ln_pre (null without norm_pre), ln_post (null with fc_norm), fc_norm (null without).
  torch::nn::LayerNorm ln_pre{nullptr}, ln_post{nullptr}, fc_norm{nullptr};
  /// Holds `resblocks` (keys transformer.resblocks.{i}.*).
  std::shared_ptr<torch::nn::Module> transformer;
  torch::nn::ModuleList resblocks{nullptr};

 private:
  VisionTransformerOptions options_;
};
TORCH_MODULE(VisionTransformer);

}  // namespace retclip::model
