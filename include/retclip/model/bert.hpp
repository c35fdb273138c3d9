// The text tower: a BERT encoder with HF parameter names (`embeddings.*`,
// `encoder.layer.{i}.*`), post-LN, exact GELU, no pooler. Output is the last hidden
// state of token 0 ([CLS]); padding (pad id) is masked out of attention.
//
//   model::BertEncoder bert(model::text_preset("bert-micro", /*vocab_size=*/1000));
//   auto cls = bert->forward(tokens);   // [B, T] int64 -> [B, H]
//
// Legend: B batch, T tokens, H hidden.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace retclip::model {

struct BertOptions {
  TORCH_ARG(int64_t, vocab_size) = 21128;
  TORCH_ARG(int64_t, hidden) = 768;
  TORCH_ARG(int64_t, layers) = 12;
  TORCH_ARG(int64_t, heads) = 12;
  TORCH_ARG(int64_t, intermediate) = 3072;
  TORCH_ARG(int64_t, max_position) = 512;
  TORCH_ARG(int64_t, type_vocab_size) = 2;
  /// Hidden-state dropout (embeddings, attention output, FFN output) in training mode.
  TORCH_ARG(double, hidden_dropout) = 0.1;
  /// Dropout on the attention probabilities in training mode.
  TORCH_ARG(double, attention_dropout) = 0.1;
  TORCH_ARG(double, layer_norm_eps) = 1e-12;
  TORCH_ARG(double, initializer_range) = 0.02;
  TORCH_ARG(int64_t, pad_id) = 0;
  TORCH_ARG(bool, grad_checkpointing) = false;
};

/// One post-LN encoder layer with HF names: attention.self.{query,key,value},
/// attention.output.{dense,LayerNorm}, intermediate.dense, output.{dense,LayerNorm}.
class BertLayerImpl : public torch::nn::Module {
 public:
  explicit BertLayerImpl(const BertOptions& options);
  /// Shape: x [B, T, H], attend [B, 1, 1, T] bool (true = attend) -> [B, T, H].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& attend);

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr}, attn_dense{nullptr};
  torch::nn::LayerNorm attn_norm{nullptr};
  torch::nn::Linear inter_dense{nullptr}, out_dense{nullptr};
  torch::nn::LayerNorm out_norm{nullptr};

 private:
  BertOptions options_;
};
TORCH_MODULE(BertLayer);

class BertEncoderImpl : public torch::nn::Module {
 public:
  explicit BertEncoderImpl(const BertOptions& options);

  /// Re-draws every parameter as HF BERT does: normal(0, initializer_range) for
  /// weights and embeddings, zero biases, LayerNorm 1/0, zero pad-id embedding row.
  void reset_parameters();

  /// All hidden states of the last layer. Token type is 0 everywhere.
  /// Shape: tokens [B, T] int64 (T <= max_position) -> [B, T, H].
  torch::Tensor forward_hidden(const torch::Tensor& tokens);

  /// Hidden state of token 0 ([CLS]). Shape: tokens [B, T] int64 -> [B, H].
  torch::Tensor forward(const torch::Tensor& tokens);

  void pretty_print(std::ostream& stream) const override;

  const BertOptions& options() const { return options_; }
  void set_grad_checkpointing(bool enabled) { options_.grad_checkpointing(enabled); }

  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr},
      token_type_embeddings{nullptr};
  torch::nn::LayerNorm embeddings_norm{nullptr};
  torch::nn::ModuleList layer{nullptr};

 private:
  BertOptions options_;
};
TORCH_MODULE(BertEncoder);

}  // namespace retclip::model
