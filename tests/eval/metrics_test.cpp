// Classification metrics on hand-checked cases; the scikit-learn comparison is in
// metrics_oracle_test.cpp.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>

#include "retclip/eval/metrics.hpp"
#include "retclip/util/error.hpp"

using namespace retclip;
using namespace retclip::eval;

TEST(Metrics, AurocCountsTiesHalf) {
  // Positives {0.8, 0.5}, negatives {0.5, 0.1}: pairs win 1 + 1 + 0.5 + 1 of 4.
  EXPECT_DOUBLE_EQ(auroc({0.8, 0.5, 0.5, 0.1}, {1, 1, 0, 0}), 3.5 / 4.0);
  EXPECT_TRUE(std::isnan(auroc({0.1, 0.2}, {1, 1})));
}

TEST(Metrics, RocCurveStepsAtDistinctScoresAndItsAreaIsAuroc) {
  // Scores 0.9(+) 0.8(-) 0.5(+) 0.5(-) 0.1(-): the tie moves both rates in one step.
  const std::vector<double> s = {0.9, 0.8, 0.5, 0.5, 0.1};
  const std::vector<uint8_t> y = {1, 0, 1, 0, 0};
  const RocCurve c = roc_curve(s, y);
  const std::vector<double> fpr = {0, 0, 1.0 / 3, 2.0 / 3, 1}, tpr = {0, 0.5, 0.5, 1, 1};
  ASSERT_EQ(c.fpr.size(), fpr.size());
  double area = 0;
  for (size_t i = 0; i < fpr.size(); ++i) {
    EXPECT_NEAR(c.fpr[i], fpr[i], 1e-12) << i;
    EXPECT_NEAR(c.tpr[i], tpr[i], 1e-12) << i;
    if (i) area += (c.fpr[i] - c.fpr[i - 1]) * (c.tpr[i] + c.tpr[i - 1]) / 2;
  }
  EXPECT_NEAR(area, auroc(s, y), 1e-12);
  EXPECT_TRUE(roc_curve({0.1, 0.2}, {1, 1}).fpr.empty());
}

TEST(Metrics, AveragePrecisionStepsAtDistinctScores) {
  // Ranked 1,0,1: precision 1 at recall 0.5, then 2/3 at recall 1 -> 0.5 + 1/3.
  EXPECT_NEAR(average_precision({0.9, 0.8, 0.7}, {1, 0, 1}), 0.5 + 1.0 / 3.0, 1e-12);
  // All tied: one step with precision 2/3.
  EXPECT_NEAR(average_precision({0.5, 0.5, 0.5}, {1, 0, 1}), 2.0 / 3.0, 1e-12);
}

TEST(Metrics, ConfusionAndKappaByHand) {
  auto cm = confusion_matrix({0, 0, 1, 1, 2}, {0, 1, 1, 1, 0}, 3);
  EXPECT_EQ(cm.at(0, 1), 1);
  EXPECT_EQ(cm.at(2, 0), 1);
  EXPECT_DOUBLE_EQ(accuracy(cm), 3.0 / 5.0);
  // Observed disagreement 2/5; expected from marginals rows (2,2,1), cols (2,3,0).
  const double pe = (2.0 * 2 + 2.0 * 3 + 0) / 25.0;
  EXPECT_NEAR(cohen_kappa(cm, KappaWeights::kNone), (0.6 - pe) / (1 - pe), 1e-12);
  auto sens = sensitivity(cm);
  EXPECT_DOUBLE_EQ(sens[0], 0.5);
  EXPECT_DOUBLE_EQ(sens[2], 0.0);
  EXPECT_DOUBLE_EQ(specificity(cm)[2], 1.0);
  EXPECT_THROW(confusion_matrix({0, 3}, {0, 0}, 3), retclip::Error);
}

TEST(Metrics, ThresholdTuningPicksBestF1) {
  auto s = torch::tensor({{0.9}, {0.8}, {0.3}, {0.2}}, torch::kDouble);
  auto t = torch::tensor({{1.0}, {1.0}, {0.0}, {1.0}}, torch::kDouble);
  // >=0.8 gives F1 0.8, >=0.2 gives 6/7: the lowest wins here.
  auto th = tune_f1_thresholds(s, t);
  EXPECT_DOUBLE_EQ(th[0], 0.2);
  auto m = multi_label_metrics(s, t, th);
  EXPECT_NEAR(m.f1[0], 6.0 / 7.0, 1e-12);
}

TEST(Metrics, BootstrapIsSeededAndBracketsTheEstimate) {
  torch::manual_seed(3);
  const int64_t n = 400;
  auto y = torch::randint(0, 3, {n}, torch::kLong);
  auto s = torch::randn({n, 3}, torch::kDouble) + 1.5 * torch::one_hot(y, 3).to(torch::kDouble);
  auto point = single_label_metrics(s, y);
  auto a = single_label_bootstrap(s, y, {200, 7, 0.95});
  auto b = single_label_bootstrap(s, y, {200, 7, 0.95});
  auto c = single_label_bootstrap(s, y, {200, 8, 0.95});
  EXPECT_EQ(a.at("auroc_macro").lo, b.at("auroc_macro").lo);
  EXPECT_NE(a.at("auroc_macro").lo, c.at("auroc_macro").lo);
  for (const auto& [k, v] : point.scalars()) {
    EXPECT_LT(a.at(k).lo, v) << k;
    EXPECT_GT(a.at(k).hi, v) << k;
    EXPECT_EQ(a.at(k).rounds, 200) << k;
  }
  // A CI from 4x the rows is roughly half as wide.
  auto small = single_label_bootstrap(s.slice(0, 0, n / 4), y.slice(0, 0, n / 4), {200, 7, 0.95});
  const double w = a.at("accuracy").hi - a.at("accuracy").lo;
  const double ws = small.at("accuracy").hi - small.at("accuracy").lo;
  EXPECT_GT(ws, 1.4 * w);
  EXPECT_LT(ws, 2.8 * w);
}

TEST(Metrics, BootstrapPercentilesInterpolateLinearly) {
  // A metric that returns the first resampled index: with n = 2 its values are 0/1 and
  // the CI at level 0.5 is the 25th and 75th percentile of a 0/1 sample.
  auto ci = bootstrap_ci(2, [](const std::vector<int64_t>& r) { return static_cast<double>(r[0]); },
                         {1000, 1, 0.5});
  EXPECT_EQ(ci.lo, 0.0);
  EXPECT_EQ(ci.hi, 1.0);
  auto undefined =
      bootstrap_ci(5, [](const std::vector<int64_t>&) { return std::nan(""); }, {10, 1, 0.95});
  EXPECT_EQ(undefined.rounds, 0);
}
