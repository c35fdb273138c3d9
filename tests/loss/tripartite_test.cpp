// Unit tests of the tripartite loss on hand-made features: known values, clamp,
// eye masks, local rows x global columns, empty levels, weights.
#include <gtest/gtest.h>

#include <cmath>

#include "retclip/loss/tripartite.hpp"

using namespace retclip;

namespace {

torch::Tensor unit_rows(int64_t n, int64_t e) {
  return torch::nn::functional::normalize(torch::randn({n, e}),
                                          torch::nn::functional::NormalizeFuncOptions().dim(1));
}

model::Embeddings random_embeddings(int64_t n, int64_t e, double log_scale) {
  model::Embeddings x;
  for (model::Level l : model::kLevels) x.img[l] = unit_rows(n, e).requires_grad_(true);
  for (model::Level l : model::kLevels) x.txt[l] = unit_rows(n, e).requires_grad_(true);
  for (model::Level l : model::kLevels)
    x.logit_scale[l] = torch::tensor(log_scale, torch::requires_grad());
  x.has_left = torch::ones({n}, torch::kBool);
  x.has_right = torch::ones({n}, torch::kBool);
  return x;
}

/// Reference for one level written out plainly: symmetric CE over the valid rows.
double plain_level(const torch::Tensor& img, const torch::Tensor& txt, double log_scale,
                   const torch::Tensor& valid) {
  auto idx = valid.nonzero().view(-1);
  auto i = img.index_select(0, idx).to(torch::kDouble),
       t = txt.index_select(0, idx).to(torch::kDouble);
  auto logits = std::exp(log_scale) * i.matmul(t.t());
  const int64_t m = logits.size(0);
  double sum = 0;
  for (int64_t r = 0; r < m; ++r) {
    sum += -torch::log_softmax(logits[r], 0)[r].item<double>();
    sum += -torch::log_softmax(logits.t()[r], 0)[r].item<double>();
  }
  return sum / (2.0 * m);
}

}  // namespace

TEST(TripartiteLoss, PerfectAlignmentWithHighScaleGivesZeroLoss) {
  auto e = random_embeddings(8, 16, std::log(100.0));
  torch::NoGradGuard ng;
  auto eye = torch::eye(8, 16);
  for (model::Level l : model::kLevels) e.img[l] = e.txt[l] = eye;
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  EXPECT_LT(out.total.item<double>(), 1e-6);
  EXPECT_DOUBLE_EQ(out.level[model::Level::kPatient].acc_i2t, 1.0);
  EXPECT_DOUBLE_EQ(out.level[model::Level::kLeft].acc_t2i, 1.0);
  EXPECT_DOUBLE_EQ(out.level[model::Level::kRight].acc_i2t, 1.0);
  EXPECT_EQ(out.level[model::Level::kPatient].rows, 8);
}

TEST(TripartiteLoss, IdenticalFeaturesGiveLogN) {
  auto e = random_embeddings(5, 4, 2.0);
  torch::NoGradGuard ng;
  auto same = torch::ones({5, 4}) / 2.0;
  e.img[model::Level::kLeft] = same;
  e.txt[model::Level::kLeft] = same;
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  EXPECT_NEAR(out.level[model::Level::kLeft].loss.item<double>(), std::log(5.0), 1e-6);
}

TEST(TripartiteLoss, MatchesPlainComputationAndWeights) {
  torch::manual_seed(0);
  auto e = random_embeddings(6, 8, 2.5);
  e.has_left = torch::tensor({true, false, true, true, false, true});
  e.has_right = torch::tensor({true, true, true, false, true, true});
  auto opts = loss::TripartiteLossOptions().weight_patient(0.5).weight_left(2.0).weight_right(3.0);
  auto out = loss::tripartite_loss(e, opts);
  const double p = plain_level(e.img[model::Level::kPatient], e.txt[model::Level::kPatient], 2.5, torch::ones({6}, torch::kBool));
  const double l = plain_level(e.img[model::Level::kLeft], e.txt[model::Level::kLeft], 2.5, e.has_left);
  const double r = plain_level(e.img[model::Level::kRight], e.txt[model::Level::kRight], 2.5, e.has_right);
  EXPECT_NEAR(out.level[model::Level::kPatient].loss.item<double>(), p, 1e-5);
  EXPECT_NEAR(out.level[model::Level::kLeft].loss.item<double>(), l, 1e-5);
  EXPECT_NEAR(out.level[model::Level::kRight].loss.item<double>(), r, 1e-5);
  EXPECT_NEAR(out.total.item<double>(), 0.5 * p + 2.0 * l + 3.0 * r, 1e-5);
  EXPECT_EQ(out.level[model::Level::kLeft].rows, 4);
  EXPECT_EQ(out.level[model::Level::kRight].rows, 5);
  std::cout << "patient " << p << " left " << l << " right " << r << "\n";
}

TEST(TripartiteLoss, RowsWithoutAnEyeTakeNoPartInThatLevel) {
  torch::manual_seed(1);
  auto e = random_embeddings(6, 8, 3.0);
  e.has_left = torch::tensor({true, false, true, true, false, true});
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  out.total.backward();
  // Rows 1 and 4 (no left eye) receive no gradient from the left level ...
  EXPECT_EQ(e.img[model::Level::kLeft].grad()[1].abs().max().item<double>(), 0);
  EXPECT_EQ(e.txt[model::Level::kLeft].grad()[4].abs().max().item<double>(), 0);
  EXPECT_GT(e.img[model::Level::kLeft].grad()[0].abs().max().item<double>(), 0);
  // ... and changing them changes nothing (neither as query nor as negative).
  torch::NoGradGuard ng;
  auto e2 = e;
  e2.img[model::Level::kLeft] = e.img[model::Level::kLeft].detach().clone();
  e2.txt[model::Level::kLeft] = e.txt[model::Level::kLeft].detach().clone();
  e2.img[model::Level::kLeft][1] = e.img[model::Level::kLeft][0].detach();
  e2.txt[model::Level::kLeft][4] = e.img[model::Level::kLeft][2].detach();
  auto out2 = loss::tripartite_loss(e2, loss::TripartiteLossOptions());
  EXPECT_EQ(out.level[model::Level::kLeft].loss.item<double>(), out2.level[model::Level::kLeft].loss.item<double>());
}

TEST(TripartiteLoss, LogitScaleIsClamped) {
  torch::manual_seed(2);
  auto e = random_embeddings(4, 8, 7.0);
  auto opts = loss::TripartiteLossOptions().logit_scale_max(std::log(20.0));
  auto out = loss::tripartite_loss(e, opts);
  out.total.backward();
  EXPECT_EQ(e.logit_scale[model::Level::kPatient].grad().item<double>(), 0.0);  // above the clamp: no gradient
  auto e2 = random_embeddings(4, 8, std::log(20.0));
  e2.img[model::Level::kPatient] = e.img[model::Level::kPatient];
  e2.txt[model::Level::kPatient] = e.txt[model::Level::kPatient];
  torch::NoGradGuard ng;
  EXPECT_NEAR(
      loss::contrastive_level(e2.img[model::Level::kPatient], e2.txt[model::Level::kPatient], e2.logit_scale[model::Level::kPatient], {}, 0, -1, opts)
          .loss.item<double>(),
      out.level[model::Level::kPatient].loss.item<double>(), 1e-6);
}

TEST(TripartiteLoss, LocalRowsAgainstGlobalColumnsAverageToGlobalLoss) {
  torch::manual_seed(3);
  auto e = random_embeddings(8, 8, 2.0);
  // Unequal left eyes per "rank": 4 in rows 0-3, 2 in rows 4-7.
  e.has_left = torch::tensor({1, 1, 1, 1, 1, 0, 0, 1}).to(torch::kBool);
  const auto global = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  auto local = loss::TripartiteLossOptions().local_loss(true).world_size(2);
  auto a = loss::tripartite_loss(e, local, 0, 4), b = loss::tripartite_loss(e, local, 4, 8);
  EXPECT_EQ(a.level[model::Level::kLeft].rows, 4);
  EXPECT_EQ(b.level[model::Level::kLeft].rows, 2);
  // Each rank's share is scaled so that the plain mean over ranks is the global loss,
  // at every level, whatever the number of valid rows per rank.
  EXPECT_NEAR((a.level[model::Level::kPatient].loss.item<double>() + b.level[model::Level::kPatient].loss.item<double>()) / 2,
              global.level[model::Level::kPatient].loss.item<double>(), 1e-5);
  EXPECT_NEAR((a.level[model::Level::kLeft].loss.item<double>() + b.level[model::Level::kLeft].loss.item<double>()) / 2, global.level[model::Level::kLeft].loss.item<double>(),
              1e-5);
  EXPECT_NEAR((a.total.item<double>() + b.total.item<double>()) / 2, global.total.item<double>(),
              1e-5);
  // So are the gradients: the mean of the two ranks' gradients is the global one.
  auto grad_of = [&](const at::Tensor& loss) {
    return torch::autograd::grad({loss}, {e.img[model::Level::kLeft]}, {}, /*retain_graph=*/true)[0];
  };
  at::Tensor g_global = grad_of(global.total);
  at::Tensor g_mean = (grad_of(a.total) + grad_of(b.total)) / 2;
  EXPECT_TRUE(g_mean.allclose(g_global, 1e-5, 1e-6));
  // One rank holding every row: local loss equals the plain loss.
  auto whole = loss::tripartite_loss(e, loss::TripartiteLossOptions().local_loss(true), 0, 8);
  EXPECT_NEAR(whole.total.item<double>(), global.total.item<double>(), 1e-6);
  // The range is ignored without local_loss.
  auto full = loss::tripartite_loss(e, loss::TripartiteLossOptions(), 0, 4);
  EXPECT_EQ(full.level[model::Level::kPatient].loss.item<double>(), global.level[model::Level::kPatient].loss.item<double>());
  EXPECT_THROW(loss::tripartite_loss(e, local, 5, 9), std::exception);
}

TEST(TripartiteLoss, LevelWithoutRowsIsZeroAndKeepsGraph) {
  auto e = random_embeddings(4, 8, 2.0);
  e.has_right = torch::zeros({4}, torch::kBool);
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  EXPECT_EQ(out.level[model::Level::kRight].loss.item<double>(), 0.0);
  EXPECT_EQ(out.level[model::Level::kRight].rows, 0);
  EXPECT_TRUE(out.total.requires_grad());
  out.total.backward();
  EXPECT_EQ(e.img[model::Level::kRight].grad().abs().max().item<double>(), 0.0);
  EXPECT_EQ(e.logit_scale[model::Level::kRight].grad().item<double>(), 0.0);
}

TEST(TripartiteLoss, LocalLossWithEveryEyeOnOneRankAveragesToGlobalLoss) {
  torch::manual_seed(4);
  auto e = random_embeddings(8, 8, 2.0);
  // Every left eye on "rank" 0 (rows 0-3), none on rank 1 (rows 4-7).
  e.has_left = torch::tensor({1, 1, 1, 0, 0, 0, 0, 0}).to(torch::kBool);
  const auto global = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  auto local = loss::TripartiteLossOptions().local_loss(true).world_size(2);
  auto a = loss::tripartite_loss(e, local, 0, 4), b = loss::tripartite_loss(e, local, 4, 8);
  ASSERT_EQ(a.level[model::Level::kLeft].rows, 3);
  ASSERT_EQ(b.level[model::Level::kLeft].rows, 0);
  const double g = global.level[model::Level::kLeft].loss.item<double>();
  EXPECT_NEAR((a.level[model::Level::kLeft].loss.item<double>() +
               b.level[model::Level::kLeft].loss.item<double>()) /
                  2,
              g, 1e-5);
  EXPECT_NEAR((a.total.item<double>() + b.total.item<double>()) / 2, global.total.item<double>(),
              1e-5);
  auto grad_of = [&](const at::Tensor& loss) {
    return torch::autograd::grad({loss}, {e.img[model::Level::kLeft]}, {}, /*retain_graph=*/true)[0];
  };
  at::Tensor g_mean = (grad_of(a.total) + grad_of(b.total)) / 2;
  EXPECT_TRUE(g_mean.allclose(grad_of(global.total), 1e-5, 1e-6));
}
