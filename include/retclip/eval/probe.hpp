// Linear probe on frozen features: L2-regularised logistic regression fitted with L-BFGS
// (softmax for single-label, one sigmoid per label for multi-label, one sigmoid for two
// classes), the regularisation chosen on the validation split, the test split scored
// once with the chosen model; optional K-shot training sets drawn over several seeds.
//
//   eval::ProbeData d{train_x, train_y, val_x, val_y, test_x, test_y, /*multi_label=*/false};
//   eval::ProbeOptions o;            // C grid 1e-4..1e4, balanced = false, shots = 0
//   eval::ProbeResult r = eval::run_probe(d, o);
//   r.test_mean.at("auroc_macro"), r.runs[0].chosen_c, r.runs[0].test_scores
//
// The objective equals scikit-learn LogisticRegression(C, solver="lbfgs"):
//   C * sum_i w_i * loss_i + ||W||^2 / 2 (bias not penalised), w_i = 1 or balanced
//   class weights n / (classes * n_class).
// Dimensions: N rows, D feature width, C classes (or L labels).
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "retclip/data/labels.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/eval/metrics.hpp"

namespace retclip::eval {

/// x: [N,D] features. y: single-label [N] int64 class indices; multi-label [N,L] 0/1.
struct ProbeData {
  at::Tensor train_x, train_y, val_x, val_y, test_x, test_y;
  bool multi_label = false;
  int64_t classes = 0;  ///< C or L (0: from y)
};

struct ProbeOptions {
  std::vector<double> c_grid = {1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000, 10000};
  bool balanced = false;  ///< class weights n / (C * n_c)
  int64_t shots = 0;      ///< K training rows per class (0 = all of train)
  int64_t seeds = 1;      ///< K-shot draws (seeds 0..N-1 offset by `seed`)
  uint64_t seed = 0;
  int64_t max_iter = 500;              ///< L-BFGS iterations per fit
  std::string select = "auroc_macro";  ///< validation metric that picks C
  BootstrapOptions bootstrap;          ///< test CIs (rounds 0 = none)
};

/// A fitted probe. weight [C,D] (binary: [1,D]), bias [C].
struct LogisticModel {
  at::Tensor weight, bias;
  bool multi_label = false;
  int64_t classes = 0;
  /// Probabilities [N,C]: softmax rows, or per-label sigmoids (binary: [1-p, p]).
  at::Tensor predict_proba(const at::Tensor& x) const;
};

/// Fits one model with inverse regularisation strength `c` (scikit-learn's C).
LogisticModel fit_logistic(const at::Tensor& x, const at::Tensor& y, double c, bool multi_label,
                           int64_t classes, bool balanced, int64_t max_iter = 500);

struct ProbeRun {
  uint64_t seed = 0;
  int64_t train_rows = 0;
  double chosen_c = 0;
  std::map<double, double> val_by_c;     ///< C -> validation metric
  std::map<std::string, double> test;    ///< test scalars
  at::Tensor test_scores;                ///< [N_test, C] probabilities
  std::vector<double> thresholds;        ///< multi-label: F1 thresholds tuned on validation
  std::vector<int64_t> train_rows_used;  ///< indices into train_x
};

struct ProbeResult {
  std::vector<ProbeRun> runs;
  std::map<std::string, double> test_mean,
      test_std;                             ///< over runs (std: population, 0 for one run)
  std::map<std::string, Interval> test_ci;  ///< bootstrap CIs of the first run
  SingleLabelMetrics single;                ///< first run, full detail (single-label)
  MultiLabelMetrics multi;                  ///< first run, full detail (multi-label)
};

/// Selection on validation, then one scoring of the test split per run.
ProbeResult run_probe(const ProbeData& data, const ProbeOptions& options);

/// K rows per class of y (multi-label: K positives per label, union), drawn with `seed`;
/// a class with fewer rows gives all it has. Sorted indices.
std::vector<int64_t> draw_shots(const at::Tensor& y, bool multi_label, int64_t classes,
                                int64_t shots, uint64_t seed);

/// A probe of a labelled set on its features, with what a results file records.
struct LabelledProbe {
  ProbeResult result;
  std::string json;             ///< results JSON (metrics, chosen C, seeds, hashes)
  std::string predictions_csv;  ///< id, truth, one probability column per class[, pred]
  std::string summary;          ///< one human-readable line per metric
};

/// Joins `features` to the set's items by id (items without a feature are left out and
/// counted), then run_probe on the set's train / val / test splits.
LabelledProbe probe_features(const data::LabelledSet& set, const Features& features,
                             const ProbeOptions& options);

/// The library call for probing during pretraining: features of `set` with `encoder`,
/// then probe_features. Returns the test macro AUROC (and the rest in the result).
LabelledProbe run_probe(Encoder& encoder, const data::LabelledSet& set,
                        const FeatureOptions& features, const ProbeOptions& options);

/// What the eval.probe config block asks for, with its labelled set read once.
struct ProbeSetup {
  data::LabelledSet set;
  FeatureOptions features;
  ProbeOptions probe;
};

/// Reads eval.probe.data with the block's options (data.on_bad_sample applies); the set
/// must have train, val and test rows (drawn or read).
ProbeSetup probe_setup(const config::Config& cfg);

/// The probe the trainer runs every eval.probe.every_steps steps: features of the set
/// with `net` as it is now (its train/eval mode is restored afterwards), then the probe.
/// Returns "probe/<metric>" -> test value (mean over seeds), "probe/chosen_c" and
/// "probe/val_<select>", the validation value that chose C.
std::map<std::string, double> probe_during_training(model::RetClip& net, const config::Config& cfg,
                                                    const ProbeSetup& setup);

}  // namespace retclip::eval
