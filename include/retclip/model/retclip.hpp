// RET-CLIP: one ViT shared by both eyes, a BERT text tower and the tripartite heads
// (patient, left eye, right eye). Parameter names equal RET-CLIP's state-dict keys
// (docs/MODEL.md, State-dict keys), e.g. `visual.proj`, `bert.encoder.layer.0.output.dense.weight`,
// `text_projection_left.2.bias`, `global_feature_mapping.weight`, `logit_scale`.
//
//   model::RetClip net(model::retclip_options(cfg.model, tokenizer.vocab_size()));
//   auto e = net->forward(batch.left, batch.right, batch.tokens, batch.has_left, batch.has_right);
//   auto out = loss::tripartite_loss(e, loss_opts);
//
// Legend: B batch (patients), T tokens, H text hidden, E embed.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "retclip/model/bert.hpp"
#include "retclip/model/level.hpp"
#include "retclip/model/vision.hpp"

namespace retclip::model {

struct RetClipOptions {
  TORCH_ARG(VisionTransformerOptions, vision);
  TORCH_ARG(BertOptions, text);
  /// Joint embedding size E; must equal vision.embed_dim.
  TORCH_ARG(int64_t, embed_dim) = 512;
  /// Initial value of the three logit scales (log of the temperature's inverse).
  TORCH_ARG(double, logit_scale_init) = 4.4998096703302650;  // ln 90
};

/// Output of RetClip::forward, one image and one text embedding per level. Every
/// embedding is L2-normalised; rows of a missing eye in img[kLeft] / img[kRight] are zero
/// (and must be masked by the loss: valid()).
struct Embeddings {
  PerLevel<torch::Tensor> img, txt;   ///< [B, E] each
  PerLevel<torch::Tensor> logit_scale;  ///< scalars (log scale)
  torch::Tensor has_left, has_right;  ///< [B] bool
  /// [B] int64 each, or undefined; set by the training step, not the model: rows with
  /// equal ids at a level have identical text there (loss.duplicates: positive): the
  /// patient report, or the eye's own report where the data has per-eye reports.
  PerLevel<torch::Tensor> report_id;

  /// Rows that take part at `level`: undefined (every row) for the patient level,
  /// has_left / has_right for the eyes.
  torch::Tensor valid(Level level) const;
};

/// Per-eye image features before the heads.
struct ImageFeatures {
  torch::Tensor left, right;  ///< [B, E] raw ViT features; zero rows for missing eyes
};

/// Text features after the three projections (not normalised).
struct TextFeatures {
  torch::Tensor patient, left, right;  ///< [B, E]
};

class RetClipImpl : public torch::nn::Module {
 public:
  explicit RetClipImpl(const RetClipOptions& options);

  /// Re-initialises every parameter as the reference (towers, projections, scales).
  void reset_parameters();

  /// Raw ViT feature of single images. Shape: images [B, 3, S, S] -> [B, E].
  torch::Tensor encode_image(const torch::Tensor& images);

  /// Three projected text features (not normalised). Shape: tokens [B, T] -> 3 x [B, E].
  TextFeatures encode_text(const torch::Tensor& tokens);

  /// Runs the ViT once over the present eyes only (both eyes batched together) and
  /// scatters the results back. Undefined masks mean "all present".
  /// Shape: left/right [B, 3, S, S], has_left/has_right [B] bool -> 2 x [B, E].
  ImageFeatures encode_eyes(const torch::Tensor& left, const torch::Tensor& right,
                            const torch::Tensor& has_left, const torch::Tensor& has_right);

  /// Full tripartite forward. The patient image feature is
  /// global_feature_mapping(cat(l, r)) of the raw ViT features, where a missing eye's
  /// feature is replaced by the present eye's; per-eye features go through
  /// left/right_feature_mapping. All six outputs are L2-normalised.
  /// Shape: left/right [B, 3, S, S], tokens [B, T] int64, has_left/has_right [B] bool.
  Embeddings forward(const torch::Tensor& left, const torch::Tensor& right,
                     const torch::Tensor& tokens, const torch::Tensor& has_left = {},
                     const torch::Tensor& has_right = {});

  void set_grad_checkpointing(bool enabled);
  const RetClipOptions& options() const { return options_; }
  void pretty_print(std::ostream& stream) const override;

  VisionTransformer visual{nullptr};
  BertEncoder bert{nullptr};
  torch::nn::Sequential text_projection{nullptr}, text_projection_left{nullptr},
      text_projection_right{nullptr};
  torch::nn::Linear global_feature_mapping{nullptr}, left_feature_mapping{nullptr},
      right_feature_mapping{nullptr};
  torch::Tensor logit_scale, logit_scale_left, logit_scale_right;
  /// The logit scale parameter of a level (shares storage: in-place ops update it).
  torch::Tensor logit_scale_of(Level level) const;

 private:
  RetClipOptions options_;
};
TORCH_MODULE(RetClip);

}  // namespace retclip::model
