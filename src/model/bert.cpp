// BERT encoder with HF names (post-LN, erf GELU, LN eps 1e-12, no pooler). The HF
// nesting (attention.self.query, ...) is reproduced with plain container modules so
// that named_parameters() yields HF's keys while the layer holds flat handles.
#include "retclip/model/bert.hpp"

#include <ATen/ATen.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>

#include "ops.hpp"
#include "retclip/model/activation_checkpoint.hpp"
#include "retclip/util/error.hpp"

namespace retclip::model {
namespace {

std::shared_ptr<torch::nn::Module> container(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

torch::nn::LayerNorm layer_norm(int64_t h, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(eps));
}

}  // namespace

BertLayerImpl::BertLayerImpl(const BertOptions& options) : options_(options) {
  const int64_t h = options.hidden(), f = options.intermediate();
  auto attention = container(*this, "attention");
  auto self = container(*attention, "self");
  query = self->register_module("query", torch::nn::Linear(h, h));
  key = self->register_module("key", torch::nn::Linear(h, h));
  value = self->register_module("value", torch::nn::Linear(h, h));
  auto attn_out = container(*attention, "output");
  attn_dense = attn_out->register_module("dense", torch::nn::Linear(h, h));
  attn_norm = attn_out->register_module("LayerNorm", layer_norm(h, options.layer_norm_eps()));
  auto intermediate = container(*this, "intermediate");
  inter_dense = intermediate->register_module("dense", torch::nn::Linear(h, f));
  auto output = container(*this, "output");
  out_dense = output->register_module("dense", torch::nn::Linear(f, h));
  out_norm = output->register_module("LayerNorm", layer_norm(h, options.layer_norm_eps()));
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& attend) {
  namespace F = torch::nn::functional;
  const int64_t b = x.size(0), t = x.size(1), nh = options_.heads(), dh = options_.hidden() / nh;
  // query, key and value as one GEMM over the concatenated weights ([3H, H]; the
  // concatenation's backward hands each weight its slice of the gradient), then
  // [B, T, 3, heads, dh] -> 3 x [B, heads, T, dh] (unbind: one-copy backward).
  auto qkv = at::linear(x, at::cat({query->weight, key->weight, value->weight}),
                        at::cat({query->bias, key->bias, value->bias}))
                 .view({b, t, 3, nh, dh})
                 .unbind(2);
  const double p_attn = is_training() ? options_.attention_dropout() : 0.0;
  auto ctx = at::scaled_dot_product_attention(qkv[0].transpose(1, 2), qkv[1].transpose(1, 2),
                                              qkv[2].transpose(1, 2), attend, p_attn);
  ctx = ctx.transpose(1, 2).reshape({b, t, options_.hidden()});
  const auto drop = F::DropoutFuncOptions().p(options_.hidden_dropout()).training(is_training());
  auto a = attn_norm->forward(F::dropout(detail::linear(attn_dense, ctx), drop) + x);
  auto m = at::gelu(detail::linear(inter_dense, a));  // exact (erf) GELU
  return out_norm->forward(F::dropout(detail::linear(out_dense, m), drop) + a);
}

BertEncoderImpl::BertEncoderImpl(const BertOptions& options) : options_(options) {
  const auto& o = options_;
  RETCLIP_CHECK_USAGE(o.vocab_size() > 0, "expected a positive text vocabulary size but got ",
                      o.vocab_size(),
                      " (key model.text.vocab_size). HINT: presets without a fixed vocabulary "
                      "take it from the tokenizer");
  RETCLIP_CHECK_USAGE(o.heads() > 0 && o.hidden() % o.heads() == 0,
                      "expected the text hidden size (", o.hidden(),
                      ") to be divisible by the number of heads (", o.heads(),
                      ") (keys model.text.hidden / model.text.heads)");
  RETCLIP_CHECK_USAGE(o.pad_id() >= 0 && o.pad_id() < o.vocab_size(), "expected the pad id (",
                      o.pad_id(), ") inside the vocabulary [0, ", o.vocab_size(), ")");
  const int64_t h = o.hidden();
  auto embeddings = container(*this, "embeddings");
  word_embeddings =
      embeddings->register_module("word_embeddings", torch::nn::Embedding(o.vocab_size(), h));
  position_embeddings =
      embeddings->register_module("position_embeddings", torch::nn::Embedding(o.max_position(), h));
  token_type_embeddings = embeddings->register_module("token_type_embeddings",
                                                      torch::nn::Embedding(o.type_vocab_size(), h));
  embeddings_norm = embeddings->register_module("LayerNorm", layer_norm(h, o.layer_norm_eps()));
  auto encoder = container(*this, "encoder");
  layer = encoder->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.layers(); ++i) layer->push_back(BertLayer(o));
  reset_parameters();
}

void BertEncoderImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double std = options_.initializer_range();
  for (auto& p : named_parameters()) {
    const auto& name = p.key();
    auto& t = p.value();
    const bool is_norm = name.find("LayerNorm") != std::string::npos;
    if (is_norm) {
      t.fill_(name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0 ? 1.0 : 0.0);
    } else if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      t.zero_();
    } else {
      t.normal_(0.0, std);
    }
  }
  word_embeddings->weight[options_.pad_id()].zero_();
}

torch::Tensor BertEncoderImpl::forward_hidden(const torch::Tensor& tokens) {
  namespace F = torch::nn::functional;
  const auto& o = options_;
  RETCLIP_CHECK(tokens.dim() == 2 && tokens.scalar_type() == torch::kLong,
                "expected tokens [B, T] int64 but got ", tokens.sizes(), " ", tokens.scalar_type());
  const int64_t b = tokens.size(0), t = tokens.size(1);
  RETCLIP_CHECK(t <= o.max_position(), "expected at most ", o.max_position(),
                " tokens per text (max_position) but got ", t, ". HINT: lower data.context_length");
  auto pos = torch::arange(t, tokens.options());
  auto x = word_embeddings->forward(tokens) + position_embeddings->forward(pos).unsqueeze(0) +
           token_type_embeddings->weight[0].view({1, 1, -1});
  x = F::dropout(embeddings_norm->forward(x),
                 F::DropoutFuncOptions().p(o.hidden_dropout()).training(is_training()));
  auto attend = tokens.ne(o.pad_id()).view({b, 1, 1, t});  // true = attend
  for (const auto& m : *layer) {
    auto blk = std::dynamic_pointer_cast<BertLayerImpl>(m);
    if (o.grad_checkpointing()) {
      x = checkpoint_block([blk, attend](const at::Tensor& in) { return blk->forward(in, attend); },
                           x, blk->parameters());
    } else {
      x = blk->forward(x, attend);
    }
  }
  return x;
}

torch::Tensor BertEncoderImpl::forward(const torch::Tensor& tokens) {
  return forward_hidden(tokens).select(1, 0);
}

void BertEncoderImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options_;
  stream << "retclip::model::BertEncoder(vocab_size=" << o.vocab_size() << ", hidden=" << o.hidden()
         << ", layers=" << o.layers() << ", heads=" << o.heads()
         << ", intermediate=" << o.intermediate() << ", max_position=" << o.max_position() << ")";
}

}  // namespace retclip::model
