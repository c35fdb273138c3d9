// The probe against scikit-learn LogisticRegression on the same features and split
// (tests/python/probe_oracle.py): held-out macro AUROC within 0.01 with C chosen on
// validation; at a fixed C = 1 the test probabilities agree to 2e-3.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>

#include "retclip/eval/probe.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::eval;

namespace {

at::Tensor to_tensor(const nlohmann::json& v, bool as_long) {
  if (!v.at(0).is_array()) {
    std::vector<double> d = v.get<std::vector<double>>();
    auto t = torch::tensor(d, torch::kDouble);
    return as_long ? t.to(torch::kLong) : t;
  }
  const int64_t n = v.size(), c = v.at(0).size();
  auto t = torch::empty({n, c}, torch::kDouble);
  auto a = t.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) a[i][j] = v[i][j].get<double>();
  return t;
}

}  // namespace

TEST(ProbeOracle, HeldOutAurocMatchesScikitLearn) {
  if (std::system("python3 -c 'import sklearn' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 lacks scikit-learn";
  const fs::path out =
      fs::path(RETCLIP_BINARY_DIR) / ("probe_oracle_" + std::to_string(::getpid()) + ".json");
  const std::string cmd =
      "python3 " RETCLIP_SOURCE_DIR "/tests/python/probe_oracle.py " + out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto cases = nlohmann::json::parse(util::read_file(out));
  fs::remove(out);
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const bool ml = c["multi_label"].get<bool>();
    ProbeData d{to_tensor(c["train_x"], false),
                to_tensor(c["train_y"], !ml),
                to_tensor(c["val_x"], false),
                to_tensor(c["val_y"], !ml),
                to_tensor(c["test_x"], false),
                to_tensor(c["test_y"], !ml),
                ml,
                c["classes"].get<int64_t>()};
    ProbeOptions o;
    o.balanced = c["balanced"].get<bool>();
    auto r = run_probe(d, o);
    const double want = c["test_auroc"].get<double>();
    const double got = r.test_mean.at("auroc_macro");
    std::printf("case %zu: C %g (sklearn %g), test AUROC %.5f (sklearn %.5f), |diff| %.2g\n", i,
                r.runs[0].chosen_c, c["chosen_c"].get<double>(), got, want, std::abs(got - want));
    EXPECT_NEAR(got, want, 0.01) << "case " << i;
    auto m = fit_logistic(d.train_x, d.train_y, 1.0, ml, d.classes, o.balanced);
    auto p = m.predict_proba(d.test_x);
    const double diff = (p - to_tensor(c["test_probs_c1"], false)).abs().max().item<double>();
    std::printf("case %zu: C = 1 test probabilities, max |diff| %.2g\n", i, diff);
    EXPECT_LT(diff, 2e-3) << "case " << i;
  }
}
