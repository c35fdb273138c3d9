// Classification metrics shared by the linear probe, zero-shot and fine-tuning: AUROC,
// AUPR, F1, accuracy, balanced accuracy, Cohen's kappa, per-class sensitivity and
// specificity, the confusion matrix, and percentile-bootstrap confidence intervals.
//
//   auto r = eval::single_label_metrics(probs /*[N,C]*/, labels /*[N] in 0..C-1*/);
//   r.auroc_macro, r.f1_macro, r.kappa_quadratic, r.confusion.at(t, p)
//   auto ci = eval::single_label_bootstrap(probs, labels, {.rounds = 1000, .seed = 0});
//   auto th = eval::tune_f1_thresholds(val_probs, val_targets);       // multi-label [N,L]
//   auto m  = eval::multi_label_metrics(test_probs, test_targets, th);
//
// Conventions (each equal to scikit-learn's where scikit-learn defines the value):
//   - AUROC ties count one half (roc_auc_score); AUPR is average precision, the step
//     sum of precision over recall increments (average_precision_score, no interpolation).
//   - A class (or label) without positives, or without negatives, in the evaluated
//     split has no AUROC/AUPR: it is NaN (null in JSON) and left out of the macro mean.
//   - Single-label macro F1 averages over classes present in the truth or the
//     predictions (f1_score(average="macro")); balanced accuracy averages recall over
//     classes present in the truth (balanced_accuracy_score).
//   - Cohen's kappa weights use the index in the declared class order, so an ordered
//     grade absent from both raters still counts in the distance (cohen_kappa_score
//     with labels=range(C)).
//   - The predicted class of a row is the first index of its largest score.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace retclip::eval {

/// Binary AUROC of `score` for `positive` (1 = positive). NaN without both classes.
double auroc(const std::vector<double>& score, const std::vector<uint8_t>& positive);
/// Binary average precision. NaN without positives.
double average_precision(const std::vector<double>& score, const std::vector<uint8_t>& positive);

/// The ROC curve of `score` for `positive`: (false positive rate, true positive rate)
/// points from (0, 0) to (1, 1), one per distinct score threshold (tied scores move both
/// rates at once), so its trapezoid area is auroc(). Empty without both classes.
struct RocCurve {
  std::vector<double> fpr, tpr;
};
RocCurve roc_curve(const std::vector<double>& score, const std::vector<uint8_t>& positive);

/// counts[t * classes + p]: rows of true class t predicted as p.
struct ConfusionMatrix {
  int64_t classes = 0;
  std::vector<int64_t> counts;
  int64_t at(int64_t truth, int64_t pred) const { return counts[truth * classes + pred]; }
  int64_t total() const;
  int64_t row_sum(int64_t t) const;
  int64_t col_sum(int64_t p) const;
};

ConfusionMatrix confusion_matrix(const std::vector<int64_t>& truth,
                                 const std::vector<int64_t>& pred, int64_t classes);

enum class KappaWeights { kNone, kLinear, kQuadratic };

double accuracy(const ConfusionMatrix& cm);
double balanced_accuracy(const ConfusionMatrix& cm);
double macro_f1(const ConfusionMatrix& cm);
double cohen_kappa(const ConfusionMatrix& cm, KappaWeights weights);
/// Per class: F1 = 2TP/(2TP+FP+FN), sensitivity = TP/(TP+FN), specificity = TN/(TN+FP);
/// NaN where the denominator is zero.
std::vector<double> per_class_f1(const ConfusionMatrix& cm);
std::vector<double> sensitivity(const ConfusionMatrix& cm);
std::vector<double> specificity(const ConfusionMatrix& cm);

/// Mean of the finite entries (NaN when none is finite).
double finite_mean(const std::vector<double>& v);

struct SingleLabelMetrics {
  int64_t n = 0, classes = 0;
  std::vector<double> auroc, aupr;  ///< per class, one-vs-rest
  double auroc_macro = 0, aupr_macro = 0;
  double accuracy = 0, balanced_accuracy = 0, f1_macro = 0;
  double kappa = 0, kappa_linear = 0, kappa_quadratic = 0;
  std::vector<double> f1, sensitivity, specificity;
  ConfusionMatrix confusion;
  /// Scalars by name ("auroc_macro", "accuracy", ...), the keys bootstrap CIs use.
  std::map<std::string, double> scalars() const;
};

/// scores: [N,C] (probabilities or any per-class score; only the order matters for
/// AUROC/AUPR), labels: [N] integers in [0, C).
SingleLabelMetrics single_label_metrics(const at::Tensor& scores, const at::Tensor& labels);

struct MultiLabelMetrics {
  int64_t n = 0, labels = 0;
  std::vector<double> auroc, aupr, f1, threshold;  ///< per label
  double auroc_macro = 0, aupr_macro = 0, f1_macro = 0;
  std::map<std::string, double> scalars() const;
};

/// Per label, the score threshold (predict positive when score >= threshold) that
/// maximises F1 on these rows; the highest such threshold on ties. A label without
/// positives here gets 0.5. scores, targets: [N,L] (targets 0/1).
std::vector<double> tune_f1_thresholds(const at::Tensor& scores, const at::Tensor& targets);

/// Per-label AUROC, AUPR and F1 at `thresholds` (one per label, e.g. from
/// tune_f1_thresholds on the validation split). F1 of a label without positives is NaN.
MultiLabelMetrics multi_label_metrics(const at::Tensor& scores, const at::Tensor& targets,
                                      const std::vector<double>& thresholds);

struct Interval {
  double lo = 0, hi = 0;
  int64_t rounds = 0;  ///< resamples where the metric was defined
};

struct BootstrapOptions {
  int64_t rounds = 1000;
  uint64_t seed = 0;
  double level = 0.95;
};

/// Percentile bootstrap: `metric` is evaluated on `rounds` resamples (indices drawn with
/// replacement from [0, n)) and the (1-level)/2 and (1+level)/2 percentiles (linear
/// interpolation, as numpy.percentile) of its finite values are returned.
Interval bootstrap_ci(int64_t n, const std::function<double(const std::vector<int64_t>&)>& metric,
                      const BootstrapOptions& options);

/// Bootstrap CIs of every SingleLabelMetrics scalar (rows resampled together).
std::map<std::string, Interval> single_label_bootstrap(const at::Tensor& scores,
                                                       const at::Tensor& labels,
                                                       const BootstrapOptions& options);
std::map<std::string, Interval> multi_label_bootstrap(const at::Tensor& scores,
                                                      const at::Tensor& targets,
                                                      const std::vector<double>& thresholds,
                                                      const BootstrapOptions& options);

/// JSON views (NaN written as null); class_names may be empty (then "0", "1", ...).
nlohmann::json to_json(const SingleLabelMetrics& m, const std::vector<std::string>& class_names);
nlohmann::json to_json(const MultiLabelMetrics& m, const std::vector<std::string>& label_names);
nlohmann::json to_json(const std::map<std::string, Interval>& cis);

}  // namespace retclip::eval
