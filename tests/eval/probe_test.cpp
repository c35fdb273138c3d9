// Linear probe on small synthetic features: separable classes are learnt, the sweep
// picks C on validation only, K-shot draws are seeded, the guardrails throw.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <algorithm>

#include "retclip/eval/probe.hpp"
#include "retclip/util/error.hpp"

using namespace retclip;
using namespace retclip::eval;

namespace {

// Gaussian classes around distinct centres: x [n,d], y [n].
std::pair<at::Tensor, at::Tensor> blobs(int64_t n, int64_t classes, double spread, uint64_t seed) {
  torch::manual_seed(seed);
  auto centres = torch::eye(classes, 8, torch::kDouble) * 3.0;
  auto y = torch::arange(n, torch::kLong) % classes;
  auto x = centres.index_select(0, y) + spread * torch::randn({n, 8}, torch::kDouble);
  return {x, y};
}

}  // namespace

TEST(Probe, LearnsSeparableClasses) {
  auto [tx, ty] = blobs(90, 3, 0.5, 1);
  auto [vx, vy] = blobs(30, 3, 0.5, 2);
  auto [sx, sy] = blobs(60, 3, 0.5, 3);
  ProbeOptions o;
  o.c_grid = {0.01, 1.0};
  o.bootstrap.rounds = 50;
  auto r = run_probe({tx, ty, vx, vy, sx, sy, false, 3}, o);
  ASSERT_EQ(r.runs.size(), 1u);
  EXPECT_GT(r.test_mean.at("accuracy"), 0.95);
  EXPECT_GT(r.test_mean.at("auroc_macro"), 0.99);
  EXPECT_EQ(r.runs[0].val_by_c.size(), 2u);
  EXPECT_EQ(r.single.n, 60);
  EXPECT_EQ(r.runs[0].test_scores.sizes(), (std::vector<int64_t>{60, 3}));
  EXPECT_TRUE(r.test_ci.count("auroc_macro"));
}

TEST(Probe, SelectionNeverSeesTheTestSplit) {
  // Validation rows carry labels shuffled against the features; the test split is clean.
  // If the test split took part in selection, the result would differ when test changes.
  auto [tx, ty] = blobs(60, 2, 1.5, 4);
  auto [vx, vy] = blobs(40, 2, 1.5, 5);
  auto [sx, sy] = blobs(40, 2, 1.5, 6);
  ProbeOptions o;
  o.c_grid = {1e-3, 1e-1, 10};
  auto a = run_probe({tx, ty, vx, vy, sx, sy, false, 2}, o);
  auto b = run_probe({tx, ty, vx, vy, sx, 1 - sy, false, 2}, o);  // test labels flipped
  EXPECT_EQ(a.runs[0].chosen_c, b.runs[0].chosen_c);
  EXPECT_EQ(a.runs[0].val_by_c, b.runs[0].val_by_c);
  EXPECT_NEAR(a.test_mean.at("auroc_macro"), 1.0 - b.test_mean.at("auroc_macro"), 1e-9);
}

TEST(Probe, ShotsAreSeededPerClass) {
  auto [tx, ty] = blobs(100, 4, 0.5, 7);
  auto s0 = draw_shots(ty, false, 4, 3, 11), s1 = draw_shots(ty, false, 4, 3, 11);
  auto s2 = draw_shots(ty, false, 4, 3, 12);
  EXPECT_EQ(s0, s1);
  EXPECT_NE(s0, s2);
  ASSERT_EQ(s0.size(), 12u);
  for (int64_t c = 0; c < 4; ++c)
    EXPECT_EQ(
        std::count_if(s0.begin(), s0.end(), [&](int64_t i) { return ty[i].item<int64_t>() == c; }),
        3);
  auto [vx, vy] = blobs(40, 4, 0.5, 8);
  ProbeOptions o;
  o.c_grid = {1.0};
  o.shots = 2;
  o.seeds = 3;
  auto r = run_probe({tx, ty, vx, vy, vx, vy, false, 4}, o);
  ASSERT_EQ(r.runs.size(), 3u);
  EXPECT_EQ(r.runs[1].train_rows, 8);
  EXPECT_GE(r.test_std.at("accuracy"), 0.0);
}

TEST(Probe, MultiLabelTunesThresholdsOnValidation) {
  torch::manual_seed(9);
  auto make = [](int64_t n) {
    auto y = (torch::rand({n, 3}, torch::kDouble) < 0.4).to(torch::kDouble);
    auto x = torch::cat({y * 2.0, torch::zeros({n, 2}, torch::kDouble)}, 1) +
             0.5 * torch::randn({n, 5}, torch::kDouble);
    return std::make_pair(x, y);
  };
  auto [tx, ty] = make(120);
  auto [vx, vy] = make(60);
  auto [sx, sy] = make(60);
  ProbeOptions o;
  o.c_grid = {1.0};
  auto r = run_probe({tx, ty, vx, vy, sx, sy, true, 3}, o);
  EXPECT_EQ(r.runs[0].thresholds.size(), 3u);
  EXPECT_GT(r.test_mean.at("auroc_macro"), 0.95);
  EXPECT_GT(r.test_mean.at("f1_macro"), 0.8);
}

TEST(Probe, EmptySplitIsAUsageError) {
  auto [tx, ty] = blobs(10, 2, 0.5, 1);
  EXPECT_THROW(run_probe({tx, ty, tx.slice(0, 0, 0), ty.slice(0, 0, 0), tx, ty, false, 2}, {}),
               UsageError);
}
