// Classification metrics equal scikit-learn's on random inputs with ties and absent
// classes (tests/python/metrics_oracle.py writes the cases and the values), to 1e-6.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "retclip/eval/metrics.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::eval;

namespace {

constexpr double kTol = 1e-6;

at::Tensor matrix(const nlohmann::json& rows) {
  const int64_t n = rows.size(), c = rows.at(0).size();
  at::Tensor t = torch::empty({n, c}, torch::kDouble);
  auto a = t.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) a[i][j] = rows[i][j].get<double>();
  return t;
}

at::Tensor labels(const nlohmann::json& v) {
  std::vector<int64_t> l = v.get<std::vector<int64_t>>();
  return torch::tensor(l, torch::kLong);
}

// want null <=> got NaN; else |got - want| <= kTol.
void expect_value(double got, const nlohmann::json& want, const std::string& what) {
  if (want.is_null()) {
    EXPECT_TRUE(std::isnan(got)) << what << ": expected undefined but got " << got;
  } else {
    EXPECT_NEAR(got, want.get<double>(), kTol) << what;
  }
}

void expect_values(const std::vector<double>& got, const nlohmann::json& want,
                   const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    expect_value(got[i], want[i], what + "[" + std::to_string(i) + "]");
}

}  // namespace

class MetricsOracle : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::system("python3 -c 'import sklearn, numpy' >/dev/null 2>&1") != 0) {
      skip_ = "python3 lacks scikit-learn or numpy";
      return;
    }
    const std::string script = RETCLIP_SOURCE_DIR "/tests/python/metrics_oracle.py";
    const fs::path out =
        fs::path(RETCLIP_BINARY_DIR) / ("metrics_oracle_" + std::to_string(::getpid()) + ".json");
    const std::string cmd = "python3 " + script + " " + out.string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    cases_ = nlohmann::json::parse(util::read_file(out));
    fs::remove(out);
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }
  static nlohmann::json cases_;
  static std::string skip_;
};
nlohmann::json MetricsOracle::cases_;
std::string MetricsOracle::skip_;

TEST_F(MetricsOracle, SingleLabelEqualsScikitLearn) {
  int with_probs = 0;
  for (size_t i = 0; i < cases_["single"].size(); ++i) {
    const auto& c = cases_["single"][i];
    const std::string w = "case " + std::to_string(i);
    auto m = single_label_metrics(matrix(c["scores"]), labels(c["labels"]));
    expect_values(m.auroc, c["auroc"], w + " auroc");
    expect_values(m.aupr, c["aupr"], w + " aupr");
    expect_value(m.auroc_macro, c["auroc_macro"], w + " auroc_macro");
    expect_value(m.aupr_macro, c["aupr_macro"], w + " aupr_macro");
    expect_value(m.accuracy, c["accuracy"], w + " accuracy");
    expect_value(m.balanced_accuracy, c["balanced_accuracy"], w + " balanced_accuracy");
    expect_value(m.f1_macro, c["f1_macro"], w + " f1_macro");
    expect_value(m.kappa, c["kappa"], w + " kappa");
    expect_value(m.kappa_linear, c["kappa_linear"], w + " kappa_linear");
    expect_value(m.kappa_quadratic, c["kappa_quadratic"], w + " kappa_quadratic");
    expect_values(m.sensitivity, c["sensitivity"], w + " sensitivity");
    expect_values(m.specificity, c["specificity"], w + " specificity");
    for (int64_t t = 0; t < m.classes; ++t)
      for (int64_t p = 0; p < m.classes; ++p)
        EXPECT_EQ(m.confusion.at(t, p), c["confusion"][t][p].get<int64_t>()) << w;
    if (c.contains("probs")) {
      ++with_probs;
      auto mp = single_label_metrics(matrix(c["probs"]), labels(c["labels"]));
      expect_value(mp.auroc_macro, c["auroc_ovr_probs"], w + " roc_auc_score(multi_class=ovr)");
      expect_values(mp.auroc, c["auroc_probs"], w + " auroc of probabilities");
    }
  }
  EXPECT_GT(with_probs, 10);
}

TEST_F(MetricsOracle, MultiLabelEqualsScikitLearn) {
  for (size_t i = 0; i < cases_["multi"].size(); ++i) {
    const auto& c = cases_["multi"][i];
    const std::string w = "multi case " + std::to_string(i);
    auto th = tune_f1_thresholds(matrix(c["val_scores"]), matrix(c["val_targets"]));
    expect_values(th, c["thresholds"], w + " thresholds");
    auto val = multi_label_metrics(matrix(c["val_scores"]), matrix(c["val_targets"]), th);
    expect_values(val.f1, c["best_val_f1"], w + " best validation F1");
    auto test = multi_label_metrics(matrix(c["test_scores"]), matrix(c["test_targets"]), th);
    expect_values(test.auroc, c["auroc"], w + " auroc");
    expect_values(test.aupr, c["aupr"], w + " aupr");
    expect_values(test.f1, c["test_f1"], w + " test F1");
  }
}
