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
  for (auto* t :
       {&x.patient_img, &x.left_img, &x.right_img, &x.patient_txt, &x.left_txt, &x.right_txt})
    *t = unit_rows(n, e).requires_grad_(true);
  for (auto* s : {&x.logit_scale, &x.logit_scale_left, &x.logit_scale_right})
    *s = torch::tensor(log_scale, torch::requires_grad());
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
  for (auto* t :
       {&e.patient_img, &e.left_img, &e.right_img, &e.patient_txt, &e.left_txt, &e.right_txt})
    *t = eye;
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  EXPECT_LT(out.total.item<double>(), 1e-6);
  EXPECT_DOUBLE_EQ(out.acc_patient_i2t, 1.0);
  EXPECT_DOUBLE_EQ(out.acc_left_t2i, 1.0);
  EXPECT_DOUBLE_EQ(out.acc_right_i2t, 1.0);
  EXPECT_EQ(out.rows_patient, 8);
}

TEST(TripartiteLoss, IdenticalFeaturesGiveLogN) {
  auto e = random_embeddings(5, 4, 2.0);
  torch::NoGradGuard ng;
  auto same = torch::ones({5, 4}) / 2.0;
  e.left_img = same;
  e.left_txt = same;
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  EXPECT_NEAR(out.left.item<double>(), std::log(5.0), 1e-6);
}

TEST(TripartiteLoss, MatchesPlainComputationAndWeights) {
  torch::manual_seed(0);
  auto e = random_embeddings(6, 8, 2.5);
  e.has_left = torch::tensor({true, false, true, true, false, true});
  e.has_right = torch::tensor({true, true, true, false, true, true});
  auto opts = loss::TripartiteLossOptions().weight_patient(0.5).weight_left(2.0).weight_right(3.0);
  auto out = loss::tripartite_loss(e, opts);
  const double p = plain_level(e.patient_img, e.patient_txt, 2.5, torch::ones({6}, torch::kBool));
  const double l = plain_level(e.left_img, e.left_txt, 2.5, e.has_left);
  const double r = plain_level(e.right_img, e.right_txt, 2.5, e.has_right);
  EXPECT_NEAR(out.patient.item<double>(), p, 1e-5);
  EXPECT_NEAR(out.left.item<double>(), l, 1e-5);
  EXPECT_NEAR(out.right.item<double>(), r, 1e-5);
  EXPECT_NEAR(out.total.item<double>(), 0.5 * p + 2.0 * l + 3.0 * r, 1e-5);
  EXPECT_EQ(out.rows_left, 4);
  EXPECT_EQ(out.rows_right, 5);
  std::cout << "patient " << p << " left " << l << " right " << r << "\n";
}

TEST(TripartiteLoss, RowsWithoutAnEyeTakeNoPartInThatLevel) {
  torch::manual_seed(1);
  auto e = random_embeddings(6, 8, 3.0);
  e.has_left = torch::tensor({true, false, true, true, false, true});
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  out.total.backward();
  // Rows 1 and 4 (no left eye) receive no gradient from the left level ...
  EXPECT_EQ(e.left_img.grad()[1].abs().max().item<double>(), 0);
  EXPECT_EQ(e.left_txt.grad()[4].abs().max().item<double>(), 0);
  EXPECT_GT(e.left_img.grad()[0].abs().max().item<double>(), 0);
  // ... and changing them changes nothing (neither as query nor as negative).
  torch::NoGradGuard ng;
  auto e2 = e;
  e2.left_img = e.left_img.detach().clone();
  e2.left_txt = e.left_txt.detach().clone();
  e2.left_img[1] = e.left_img[0].detach();
  e2.left_txt[4] = e.left_img[2].detach();
  auto out2 = loss::tripartite_loss(e2, loss::TripartiteLossOptions());
  EXPECT_EQ(out.left.item<double>(), out2.left.item<double>());
}

TEST(TripartiteLoss, LogitScaleIsClamped) {
  torch::manual_seed(2);
  auto e = random_embeddings(4, 8, 7.0);
  auto opts = loss::TripartiteLossOptions().logit_scale_max(std::log(20.0));
  auto out = loss::tripartite_loss(e, opts);
  out.total.backward();
  EXPECT_EQ(e.logit_scale.grad().item<double>(), 0.0);  // above the clamp: no gradient
  auto e2 = random_embeddings(4, 8, std::log(20.0));
  e2.patient_img = e.patient_img;
  e2.patient_txt = e.patient_txt;
  torch::NoGradGuard ng;
  EXPECT_NEAR(
      loss::contrastive_level(e2.patient_img, e2.patient_txt, e2.logit_scale, {}, 0, -1, opts)
          .loss.item<double>(),
      out.patient.item<double>(), 1e-6);
}

TEST(TripartiteLoss, LocalRowsAgainstGlobalColumnsAverageToGlobalLoss) {
  torch::manual_seed(3);
  auto e = random_embeddings(8, 8, 2.0);
  // Unequal left eyes per "rank": 4 in rows 0-3, 2 in rows 4-7.
  e.has_left = torch::tensor({1, 1, 1, 1, 1, 0, 0, 1}).to(torch::kBool);
  const auto global = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  auto local = loss::TripartiteLossOptions().local_loss(true).world_size(2);
  auto a = loss::tripartite_loss(e, local, 0, 4), b = loss::tripartite_loss(e, local, 4, 8);
  EXPECT_EQ(a.rows_left, 4);
  EXPECT_EQ(b.rows_left, 2);
  // Each rank's share is scaled so that the plain mean over ranks is the global loss,
  // at every level, whatever the number of valid rows per rank.
  EXPECT_NEAR((a.patient.item<double>() + b.patient.item<double>()) / 2,
              global.patient.item<double>(), 1e-5);
  EXPECT_NEAR((a.left.item<double>() + b.left.item<double>()) / 2, global.left.item<double>(),
              1e-5);
  EXPECT_NEAR((a.total.item<double>() + b.total.item<double>()) / 2, global.total.item<double>(),
              1e-5);
  // So are the gradients: the mean of the two ranks' gradients is the global one.
  auto grad_of = [&](const at::Tensor& loss) {
    return torch::autograd::grad({loss}, {e.left_img}, {}, /*retain_graph=*/true)[0];
  };
  at::Tensor g_global = grad_of(global.total);
  at::Tensor g_mean = (grad_of(a.total) + grad_of(b.total)) / 2;
  EXPECT_TRUE(g_mean.allclose(g_global, 1e-5, 1e-6));
  // One rank holding every row: local loss equals the plain loss.
  auto whole = loss::tripartite_loss(e, loss::TripartiteLossOptions().local_loss(true), 0, 8);
  EXPECT_NEAR(whole.total.item<double>(), global.total.item<double>(), 1e-6);
  // The range is ignored without local_loss.
  auto full = loss::tripartite_loss(e, loss::TripartiteLossOptions(), 0, 4);
  EXPECT_EQ(full.patient.item<double>(), global.patient.item<double>());
  EXPECT_THROW(loss::tripartite_loss(e, local, 5, 9), std::exception);
}

TEST(TripartiteLoss, LevelWithoutRowsIsZeroAndKeepsGraph) {
  auto e = random_embeddings(4, 8, 2.0);
  e.has_right = torch::zeros({4}, torch::kBool);
  auto out = loss::tripartite_loss(e, loss::TripartiteLossOptions());
  EXPECT_EQ(out.right.item<double>(), 0.0);
  EXPECT_EQ(out.rows_right, 0);
  EXPECT_TRUE(out.total.requires_grad());
  out.total.backward();
  EXPECT_EQ(e.right_img.grad().abs().max().item<double>(), 0.0);
  EXPECT_EQ(e.logit_scale_right.grad().item<double>(), 0.0);
}
