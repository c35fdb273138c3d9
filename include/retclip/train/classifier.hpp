// The fine-tuned classifier: the ViT image tower with a linear head on one eye's
// feature or on the patient feature of both eyes, its losses (cross-entropy on logits,
// BCE with logits, label smoothing, class weights), mixup / cutmix, the freeze modes,
// and its export (`classifier.safetensors` + `retclip.json`) with `retclip predict`.
// A zero-shot-initialised head (finetune.head_init=zeroshot) reads the L2-normalised
// feature (`normalize`) and, at eye level, scores each eye with its own half of the head
// after RET-CLIP's left/right feature mapping (`per_eye`), as zero-shot scores eyes.
//
//   train::Classifier net(train::ClassifierOptions{vit, /*classes=*/5, false, "eye", "pre_proj"});
//   at::Tensor logits = net->forward(images);                    // [B, C]
//   at::Tensor z = per_eye_net->forward(images, {}, {}, {}, is_right);   // is_right [B] bool
//   at::Tensor t = train::smooth_targets(onehot, 0.1, false);    // [B, C]
//   at::Tensor loss = train::classification_loss(logits, t, false);
//   train::save_classifier("out/classifier", net, sidecar);
//   train::predict_manifest({"out/classifier", "m.csv", "probs.csv"});
//
// Legend: B batch (images or patients), S image side, D ViT width, E embed, C classes.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "retclip/model/vision.hpp"

namespace retclip::eval {
struct LabelledItem;  // eval/labels.hpp
}  // namespace retclip::eval

namespace retclip::train {

struct ClassifierOptions {
  model::VisionTransformerOptions vision;
  int64_t classes = 2;
  bool multi_label = false;
  std::string level = "eye";         ///< eye | patient
  std::string feature = "pre_proj";  ///< pre_proj (pooled CLS, ln_post) | post_proj (@ proj)
  /// The head's input is L2-normalised (then logits are cosines times the head's row
  /// norms: a zero-shot head's rows are unit text embeddings x the logit scale).
  bool normalize = false;
  /// Eye level, post_proj only: the feature is left_feature_mapping or
  /// right_feature_mapping of post_proj by the eye's laterality, and the head has 2C rows,
  /// 0..C-1 scoring left eyes and C..2C-1 right eyes (RET-CLIP's per-eye text heads).
  bool per_eye = false;
  /// Width of the head's input: eye pre_proj D, eye post_proj E, patient pre_proj 2D
  /// (cat of both eyes), patient post_proj E (global_feature_mapping of both eyes).
  int64_t feature_dim() const;
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
  /// softmax (single-label) or sigmoid (multi-label) of the logits. [B, C].
  at::Tensor probabilities(const at::Tensor& logits) const;

  const ClassifierOptions& options() const { return options_; }

  model::VisionTransformer visual{nullptr};
  torch::nn::Linear global_feature_mapping{nullptr};  ///< patient post_proj only
  torch::nn::Linear left_feature_mapping{nullptr}, right_feature_mapping{nullptr};  ///< per_eye
  torch::nn::Linear head{nullptr};

 private:
  ClassifierOptions options_;
};
TORCH_MODULE(Classifier);

/// The `is_right` argument of forward for a batch: [B] bool, true where
/// items[indices[j]] is a right eye.
at::Tensor right_eye_rows(const std::vector<eval::LabelledItem>& items,
                          const std::vector<int64_t>& indices);

/// finetune.freeze: "none"; "head-only" (everything but `head.*`); "first-N-blocks"
/// (patch/position embeddings, ln_pre and blocks 0..N-1). Throws UsageError naming
/// finetune.freeze for another value or N above the ViT's depth.
void apply_classifier_freeze(Classifier& net, const std::string& freeze);

/// Label smoothing of 0/1 targets [B, C]: single-label (1 - e) t + e / C (timm's
/// LabelSmoothingCrossEntropy / mixup_target), multi-label t (1 - e) + e / 2.
at::Tensor smooth_targets(const at::Tensor& targets, double eps, bool multi_label);

/// Mean loss of `logits` [B, C] against (soft) `targets` [B, C] in float32.
/// Single-label: cross-entropy of log_softmax(logits) with probability targets,
/// -sum_c w_c t_c log p_c averaged over rows (torch.nn.functional.cross_entropy with
/// probability targets and weight w); multi-label: binary_cross_entropy_with_logits
/// averaged over rows and labels, `class_weight` its pos_weight. An undefined
/// class_weight weighs every class 1.
at::Tensor classification_loss(const at::Tensor& logits, const at::Tensor& targets,
                               bool multi_label, const at::Tensor& class_weight = {});

/// finetune.class_weights=balanced from the training targets [N, C] (0/1): single-label
/// n / (C' n_c) over the C' classes present (as scikit-learn; absent classes 1),
/// multi-label pos_weight n_neg / n_pos (1 for a label without positives).
at::Tensor balanced_class_weights(const at::Tensor& targets, bool multi_label);

/// Mixup / cutmix of a batch (timm's Mixup in batch mode: the partner of row i is row
/// B-1-i). With both alphas > 0 one of the two is picked per batch with probability 1/2.
/// lam ~ Beta(alpha, alpha); cutmix pastes a box of area (1 - lam) S^2 (lam then
/// corrected to the box actually pasted) into `left` and, when defined, `right`.
/// targets become lam t + (1 - lam) t_partner. Every draw comes from `seed`.
struct MixedBatch {
  at::Tensor left, right, targets;
  double lam = 1.0;
  bool cutmix = false;
};
MixedBatch mix_batch(const at::Tensor& left, const at::Tensor& right, const at::Tensor& targets,
                     double mixup_alpha, double cutmix_alpha, uint64_t seed);

// ---- export and prediction ---------------------------------------------------------

/// Writes dir/classifier.safetensors (the module's keys) and dir/retclip.json: `sidecar`
/// plus format "retclip-classifier", the classifier options (vision sizes, classes count,
/// multi_label, level, feature, normalize, per_eye) and the file name. The sidecar carries the
/// class names
/// ("classes"), decision thresholds and preprocessing (finetune.cpp writes them).
void save_classifier(const std::filesystem::path& dir, Classifier& net, nlohmann::json sidecar);

struct LoadedClassifier {
  Classifier net{nullptr};
  nlohmann::json sidecar;
  std::vector<std::string> classes;
  int64_t image_size = 224;
  std::string preprocess = "fundus_crop";  ///< data.preprocess of the fine-tuning run
  std::array<double, 3> mean{}, std{};
};

/// Reads a directory written by save_classifier (strict: every key, right shapes).
/// Throws UsageError naming the file and a HINT when it is not a classifier export.
LoadedClassifier load_classifier(const std::filesystem::path& dir);

struct PredictOptions {
  std::string weights;      ///< classifier export directory
  std::string manifest;     ///< patient manifest (CSV/JSONL) or labelled set the readers take
  std::string out;          ///< CSV: id, patient_id, eye, one probability column per class
  std::string split;        ///< only rows of this split (empty = all)
  std::string save_inputs;  ///< optional .safetensors of the model inputs (oracle tests)
  int64_t batch_size = 32;
  int64_t workers = 2;
  std::string device = "auto";
};

/// Per-sample probabilities of a manifest's rows: eye level one row per present eye
/// (id `<patient>:left|right`), patient level one row per patient. Returns the rows
/// written.
int64_t predict_manifest(const PredictOptions& options);

}  // namespace retclip::train
