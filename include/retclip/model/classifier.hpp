// The fine-tuned classifier: the ViT image tower with a linear head on one eye's feature
// or on the patient feature of both eyes. A zero-shot-initialised head
// (finetune.head_init=zeroshot) reads the L2-normalised feature (`normalize`) and, at eye
// level, scores each eye with its own half of the head after RET-CLIP's left/right
// feature mapping (`per_eye`), as zero-shot scores eyes. Its losses live in
// loss/classification.hpp, its export and `retclip predict` in eval/predict.hpp.
//
//   model::Classifier net(model::ClassifierOptions(vit, /*classes=*/5)
//                             .level(model::ClassifierLevel::kEye)
//                             .feature(model::ClassifierFeature::kPreProj));
//   at::Tensor logits = net->forward(images);                            // [B, C]
//   at::Tensor z = per_eye_net->forward(images, {}, {}, {}, is_right);   // is_right [B] bool
//
// Legend: B batch (images or patients), S image side, D ViT width, E embed, C classes.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "retclip/config/enums.hpp"
#include "retclip/model/vision.hpp"

namespace retclip::model {

/// What one row of the classifier is: one eye's image (kEye), or a patient, both eyes
/// (kPatient); kAuto is resolved before a classifier is built. Names ("eye" / "patient")
/// are config::name's, as finetune.level and the export's sidecar write them.
using ClassifierLevel = config::Level;
/// The head's input: the pooled CLS token after ln_post (kPreProj, width D) or the
/// image embedding after visual.proj (kPostProj, width E); names "pre_proj" / "post_proj".
using ClassifierFeature = config::Feature;

struct ClassifierOptions {
  ClassifierOptions() = default;
  ClassifierOptions(VisionTransformerOptions vision, int64_t classes)
      : vision_(std::move(vision)), classes_(classes) {}

  /// Width of the head's input: eye pre_proj D, eye post_proj E, patient pre_proj 2D
  /// (cat of both eyes), patient post_proj E (global_feature_mapping of both eyes).
  int64_t feature_dim() const;

  TORCH_ARG(VisionTransformerOptions, vision);
  TORCH_ARG(int64_t, classes) = 2;
  TORCH_ARG(bool, multi_label) = false;  ///< sigmoid per label instead of softmax
  TORCH_ARG(ClassifierLevel, level) = ClassifierLevel::kEye;
  TORCH_ARG(ClassifierFeature, feature) = ClassifierFeature::kPreProj;
  /// The head's input is L2-normalised (then logits are cosines times the head's row
  /// norms: a zero-shot head's rows are unit text embeddings x the logit scale).
  TORCH_ARG(bool, normalize) = false;
  /// Eye level, post_proj only: the feature is left_feature_mapping or
  /// right_feature_mapping of post_proj by the eye's laterality, and the head has 2C rows,
  /// 0..C-1 scoring left eyes and C..2C-1 right eyes (RET-CLIP's per-eye text heads).
  TORCH_ARG(bool, per_eye) = false;
};

/// Keys: `visual.*` (RET-CLIP names), `global_feature_mapping.weight` (patient post_proj
/// only, Linear 2E -> E without bias, as RetClip's), `left_feature_mapping.weight` and
/// `right_feature_mapping.weight` (per_eye only, Linear E -> E without bias), `head.weight`
/// [C, F] (per_eye [2C, F]), `head.bias` [C] (per_eye [2C]).
class ClassifierImpl : public torch::nn::Module {
 public:
  explicit ClassifierImpl(const ClassifierOptions& options);

  /// Head input features. Eye level: `left` [B,3,S,S] holds the images (right unused);
  /// per_eye needs `is_right` [B] bool, the laterality of each row. Patient level: both
  /// eyes, a missing eye (has_* false) takes the present eye's feature, as the
  /// pretraining forward does. L2-normalised when options().normalize. Shape: -> [B, F].
  at::Tensor features(const at::Tensor& left, const at::Tensor& right = {},
                      const at::Tensor& has_left = {}, const at::Tensor& has_right = {},
                      const at::Tensor& is_right = {});
  /// Logits [B, C] (never probabilities: the losses take logits); per_eye: each row's
  /// eye's half of the head.
  at::Tensor forward(const at::Tensor& left, const at::Tensor& right = {},
                     const at::Tensor& has_left = {}, const at::Tensor& has_right = {},
                     const at::Tensor& is_right = {});
  /// softmax (single-label) or sigmoid (multi-label) of the logits, in float32. [B, C].
  at::Tensor probabilities(const at::Tensor& logits) const;

  const ClassifierOptions& options() const { return options_; }

  VisionTransformer visual{nullptr};
  torch::nn::Linear global_feature_mapping{nullptr};  ///< patient post_proj only
  torch::nn::Linear left_feature_mapping{nullptr}, right_feature_mapping{nullptr};  ///< per_eye
  torch::nn::Linear head{nullptr};

 private:
  ClassifierOptions options_;
};
TORCH_MODULE(Classifier);

}  // namespace retclip::model
