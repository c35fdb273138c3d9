// CLIP VisualTransformer (OpenAI layout): patchify conv, CLS + positional embedding,
// ln_pre, pre-LN blocks with QuickGELU, ln_post on CLS, projection. Init as CLIP. timm's
// plain ViT family (patch bias, registers, layer scale, GELU, avg pooling, fc_norm) are
// options that leave the CLIP path's operations unchanged.
#include "retclip/model/vision.hpp"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <vector>

#include "ops.hpp"
#include "retclip/model/activation_checkpoint.hpp"
#include "retclip/util/error.hpp"

namespace retclip::model {

const char* vision_activation_name(VisionActivation a) {
  return a == VisionActivation::kGelu ? "gelu" : "quick_gelu";
}

const char* vision_pool_name(VisionPool p) {
  return p == VisionPool::kAvg ? "avg" : "token";
}

VisionActivation parse_vision_activation(const std::string& name, const std::string& key) {
  for (auto a : {VisionActivation::kQuickGelu, VisionActivation::kGelu})
    if (name == vision_activation_name(a)) return a;
  throw UsageError(str_cat("unknown activation '", name, "' (key ", key,
                           "). HINT: quick_gelu (CLIP) or gelu (timm ViTs, RETFound, DINOv2)"));
}

VisionPool parse_vision_pool(const std::string& name, const std::string& key) {
  for (auto p : {VisionPool::kToken, VisionPool::kAvg})
    if (name == vision_pool_name(p)) return p;
  throw UsageError(str_cat("unknown pooling '", name, "' (key ", key,
                           "). HINT: token (the class token) or avg (mean of the patch tokens)"));
}

VisionAttentionImpl::VisionAttentionImpl(int64_t width, int64_t heads, bool qkv_bias)
    : width_(width), heads_(heads) {
  RETCLIP_CHECK_USAGE(heads > 0 && width % heads == 0, "expected the ViT width (", width,
                      ") to be divisible by the number of heads (", heads,
                      "). HINT: set model.vision.heads to a divisor of the width");
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * width, width}));
  if (qkv_bias) in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * width}));
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

VisionMlpImpl::VisionMlpImpl(int64_t width, int64_t hidden, VisionActivation activation)
    : activation_(activation) {
  c_fc = register_module("c_fc", torch::nn::Linear(width, hidden));
  c_proj = register_module("c_proj", torch::nn::Linear(hidden, width));
}

torch::Tensor VisionMlpImpl::forward(const torch::Tensor& x) {
  auto h = detail::linear(c_fc, x);
  h = activation_ == VisionActivation::kGelu ? at::gelu(h)             // exact (erf), as nn.GELU
                                             : detail::quick_gelu(h);  // x * sigmoid(1.702 x)
  return detail::linear(c_proj, h);
}

namespace {

torch::nn::LayerNorm vision_layer_norm(int64_t width, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(eps));
}

// A child module `name` holding one parameter `gamma` [D] (keys <name>.gamma, as OpenCLIP's
// LayerScale).
torch::Tensor register_layer_scale(torch::nn::Module& parent, const char* name, int64_t width,
                                   double init) {
  auto holder = parent.register_module(name, std::make_shared<torch::nn::Module>());
  return holder->register_parameter("gamma", torch::full({width}, init));
}

}  // namespace

ResidualAttentionBlockImpl::ResidualAttentionBlockImpl(const VisionTransformerOptions& o,
                                                       int64_t mlp_hidden, double drop_path)
    : drop_path_rate(drop_path) {
  const int64_t width = o.width();
  ln_1 = register_module("ln_1", vision_layer_norm(width, o.norm_eps()));
  attn = register_module("attn", VisionAttention(width, o.num_heads(), o.qkv_bias()));
  if (o.layer_scale() > 0) ls_1_gamma = register_layer_scale(*this, "ls_1", width, o.layer_scale());
  ln_2 = register_module("ln_2", vision_layer_norm(width, o.norm_eps()));
  mlp = register_module("mlp", VisionMlp(width, mlp_hidden, o.activation()));
  if (o.layer_scale() > 0) ls_2_gamma = register_layer_scale(*this, "ls_2", width, o.layer_scale());
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
  if (ls_1_gamma.defined()) {  // timm's Block with init_values: x + drop_path(ls(branch))
    const bool drop = drop_path_rate > 0.0 && is_training();
    auto h = x + drop_path(attn->forward(ln_1->forward(x)) * ls_1_gamma.to(x.dtype()),
                           drop_path_rate, drop);
    return h + drop_path(mlp->forward(ln_2->forward(h)) * ls_2_gamma.to(x.dtype()), drop_path_rate,
                         drop);
  }
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
  RETCLIP_CHECK_USAGE(o.register_tokens() >= 0 && (o.class_token() || o.pool() == VisionPool::kAvg),
                      "expected a class token for pooling 'token' (keys model.vision.class_token / "
                      "model.vision.pool) and register_tokens >= 0 but got class_token ",
                      o.class_token(), ", register_tokens ", o.register_tokens(),
                      ". HINT: model.vision.pool=avg for a tower without a class token");
  const int64_t w = o.width();
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, w, o.patch_size())
                                                         .stride(o.patch_size())
                                                         .bias(o.patch_bias())));
  if (o.class_token()) class_embedding = register_parameter("class_embedding", torch::empty({w}));
  if (o.register_tokens() > 0)
    register_embedding =
        register_parameter("register_embedding", torch::empty({o.register_tokens(), w}));
  positional_embedding =
      register_parameter("positional_embedding", torch::empty({o.pos_embed_rows(), w}));
  if (o.norm_pre()) ln_pre = register_module("ln_pre", vision_layer_norm(w, o.norm_eps()));
  transformer = register_module("transformer", std::make_shared<torch::nn::Module>());
  resblocks = transformer->register_module("resblocks", torch::nn::ModuleList());
  const auto hidden = static_cast<int64_t>(std::llround(w * o.mlp_ratio()));
  for (int64_t i = 0; i < o.layers(); ++i) {
    // timm's linear ramp of drop-path rates over the depth (first block 0).
    const double dp =
        o.layers() > 1 ? o.drop_path() * static_cast<double>(i) / (o.layers() - 1) : o.drop_path();
    resblocks->push_back(ResidualAttentionBlock(o, hidden, dp));
  }
  if (o.fc_norm())
    fc_norm = register_module("fc_norm", vision_layer_norm(w, o.norm_eps()));
  else
    ln_post = register_module("ln_post", vision_layer_norm(w, o.norm_eps()));
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
  if (class_embedding.defined()) class_embedding.normal_(0.0, scale);
  positional_embedding.normal_(0.0, scale);
  if (register_embedding.defined()) register_embedding.normal_(0.0, scale);
  for (auto* ln : {&ln_pre, &ln_post, &fc_norm})
    if (!ln->is_empty()) (*ln)->reset_parameters();
  for (const auto& m : *resblocks) {
    auto* blk = m->as<ResidualAttentionBlockImpl>();
    blk->ln_1->reset_parameters();
    blk->ln_2->reset_parameters();
    blk->attn->in_proj_weight.normal_(0.0, scale);
    if (blk->attn->in_proj_bias.defined()) blk->attn->in_proj_bias.zero_();
    blk->attn->out_proj->weight.normal_(0.0, proj_std);
    blk->attn->out_proj->bias.zero_();
    blk->mlp->c_fc->reset_parameters();  // default bias init, as nn.Linear
    blk->mlp->c_fc->weight.normal_(0.0, fc_std);
    blk->mlp->c_proj->reset_parameters();
    blk->mlp->c_proj->weight.normal_(0.0, proj_std);
    if (blk->ls_1_gamma.defined()) {
      blk->ls_1_gamma.fill_(options_.layer_scale());
      blk->ls_2_gamma.fill_(options_.layer_scale());
    }
  }
  proj.normal_(0.0, scale);
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  return torch::matmul(forward_pooled(images), proj);  // [B, E]
}

torch::Tensor VisionTransformerImpl::forward_pooled(const torch::Tensor& images) {
  const auto& o = options_;
  RETCLIP_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == o.image_size() &&
                    images.size(3) == o.image_size(),
                "expected images [B, 3, ", o.image_size(), ", ", o.image_size(), "] but got ",
                images.sizes(),
                ". HINT: data.image_size must equal the vision preset's image size");
  const int64_t b = images.size(0), w = o.width();
  auto x = conv1->forward(images).reshape({b, w, -1}).permute({0, 2, 1});  // [B, N-P, D]
  std::vector<torch::Tensor> prefix;  // [B, 1, D] class token, [B, R, D] registers
  if (class_embedding.defined())
    prefix.push_back(class_embedding.to(x.dtype()).view({1, 1, w}).expand({b, 1, w}));
  if (register_embedding.defined())
    prefix.push_back(register_embedding.to(x.dtype()).unsqueeze(0).expand({b, -1, w}));
  const auto pe = positional_embedding.to(x.dtype());
  if (o.pos_embed_prefix()) {  // CLIP, timm's default: concat, then add
    prefix.push_back(x);
    x = torch::cat(prefix, 1) + pe;  // [B, N, D]
  } else {                           // timm's no_embed_class: add to the patches, then concat
    prefix.push_back(x + pe);
    x = prefix.size() == 1 ? prefix[0] : torch::cat(prefix, 1);
  }
  if (ln_pre) x = ln_pre->forward(x);
  for (const auto& m : *resblocks) {
    auto blk = std::dynamic_pointer_cast<ResidualAttentionBlockImpl>(m);
    if (o.grad_checkpointing()) {
      x = checkpoint_block([blk](const at::Tensor& in) { return blk->forward(in); }, x,
                           blk->parameters());
    } else {
      x = blk->forward(x);
    }
  }
  if (o.pool() == VisionPool::kToken && ln_post)
    return ln_post->forward(x.select(1, 0));  // [B, D]; per token, so = select(ln_post(x))
  if (ln_post) x = ln_post->forward(x);
  auto pooled = o.pool() == VisionPool::kToken ? x.select(1, 0)
                                               : x.slice(1, o.prefix_tokens()).mean(1);  // [B, D]
  return fc_norm ? fc_norm->forward(pooled) : pooled;
}

void VisionTransformerImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options_;
  stream << "retclip::model::VisionTransformer(image_size=" << o.image_size()
         << ", patch_size=" << o.patch_size() << ", width=" << o.width()
         << ", layers=" << o.layers() << ", heads=" << o.num_heads()
         << ", embed_dim=" << o.embed_dim();
  if (o.activation() != VisionActivation::kQuickGelu)
    stream << ", activation=" << vision_activation_name(o.activation());
  if (o.patch_bias()) stream << ", patch_bias=true";
  if (!o.norm_pre()) stream << ", norm_pre=false";
  if (!o.class_token()) stream << ", class_token=false";
  if (o.register_tokens() > 0) stream << ", register_tokens=" << o.register_tokens();
  if (!o.pos_embed_prefix()) stream << ", pos_embed_prefix=false";
  if (o.layer_scale() > 0) stream << ", layer_scale=" << o.layer_scale();
  if (o.pool() != VisionPool::kToken) stream << ", pool=" << vision_pool_name(o.pool());
  if (o.fc_norm()) stream << ", fc_norm=true";
  if (!o.qkv_bias()) stream << ", qkv_bias=false";
  if (o.norm_eps() != 1e-5) stream << ", norm_eps=" << o.norm_eps();
  stream << ")";
}

}  // namespace retclip::model
