// A fine-tuned classifier outside training: its export (`classifier.safetensors` +
// `retclip.json`), the one inference loop that scores labelled items (fine-tuning's
// validation and test splits, `retclip predict`), and the prediction CSV.
//
//   eval::save_classifier("out/classifier", net, sidecar);
//   eval::LoadedClassifier c = eval::load_classifier("out/classifier");
//   eval::Classified r = eval::classify_items(c.net, items, c.inference_options());
//   eval::predict_manifest({"out/classifier", "m.csv", "probs.csv"});
//
// Legend: N items, C classes, S image side.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/data/labels.hpp"
#include "retclip/model/autocast.hpp"
#include "retclip/model/classifier.hpp"

namespace retclip::eval {

/// How classify_items reads and runs: the data section the images are preprocessed with
/// (image size, normalisation, preprocess, max pixels), the loader's batch and threads,
/// the device and the forward's precision (the fine-tuning run's, so that results.json
/// and `retclip predict` score alike on CUDA).
struct InferenceOptions {
  config::DataConfig data;
  int64_t batch_size = 32;
  int64_t workers = 2;
  at::Device device = at::kCPU;
  model::Precision precision = model::Precision::kFp32;
  std::string progress;      ///< a progress bar with this name; empty: none
  bool keep_inputs = false;  ///< Classified also holds the preprocessed inputs
};

/// Probabilities [N, C] (float32, CPU) of the items in item order; with keep_inputs the
/// model inputs of each item ([N,3,S,S] left and right, [N] has_left and has_right).
struct Classified {
  at::Tensor probs;
  at::Tensor left, right, has_left, has_right;
};

/// The laterality of a batch's rows, the `is_right` a per-eye classifier reads: [B] bool,
/// true where items[indices[j]] is a right eye.
at::Tensor right_eye_rows(const std::vector<data::LabelledItem>& items,
                          const std::vector<int64_t>& indices);

/// Scores `items` (of the classifier's level) in one ordered pass through the inference
/// loader: eval mode (restored after), no gradient, autocast at options.precision. Every
/// bad image fails the pass. An item seen again in the loader's padded last batch keeps
/// its first probabilities.
Classified classify_items(model::Classifier& net, const std::vector<data::LabelledItem>& items,
                          const InferenceOptions& options);

/// The prediction CSV: id, patient_id, eye, one `prob_prefix`<class> column per class
/// (%.9g), and, when `targets` [N, C] is defined, one true_<class> column per class.
std::string predictions_csv(const std::vector<data::LabelledItem>& items, const at::Tensor& probs,
                            const std::vector<std::string>& classes, const std::string& prob_prefix,
                            const at::Tensor& targets = {});

// ---- export ----------------------------------------------------------------------------

/// Writes dir/classifier.safetensors (the module's keys) and dir/retclip.json: `sidecar`
/// plus format "retclip-classifier", the classifier options (vision sizes, classes count,
/// multi_label, level, feature, normalize, per_eye) and the file name. The sidecar carries
/// the class names ("classes"), decision thresholds, preprocessing and the precision of
/// the forward ("precision"; fine-tuning writes them).
void save_classifier(const std::filesystem::path& dir, model::Classifier& net,
                     nlohmann::json sidecar);

struct LoadedClassifier {
  model::Classifier net{nullptr};
  nlohmann::json sidecar;
  std::vector<std::string> classes;
  int64_t image_size = 224;
  config::Preprocess preprocess = config::Preprocess::kFundusCrop;  ///< the fine-tuning run's
  std::array<double, 3> mean{}, std{};
  /// The fine-tuning run's forward precision ("auto" in exports that predate the key:
  /// bf16 on CUDA, fp32 on CPU, as finetune.precision=auto).
  model::Precision precision = model::Precision::kAuto;

  /// Inference options reading images as the fine-tuning run did, on `device`.
  InferenceOptions inference_options(const at::Device& device) const;
};

/// Reads a directory written by save_classifier (strict: every key, right shapes).
/// Throws UsageError naming the file and a HINT when it is not a classifier export.
LoadedClassifier load_classifier(const std::filesystem::path& dir);

// ---- retclip predict -------------------------------------------------------------------

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

}  // namespace retclip::eval
