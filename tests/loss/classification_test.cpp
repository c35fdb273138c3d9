// The fine-tuning losses: label smoothing that changes the loss as its formula says,
// CE / BCE on logits, balanced class weights, mixup / cutmix.
#include "retclip/loss/classification.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

using namespace retclip;

TEST(Classifier, LabelSmoothingChangesTheLossAsItsFormulaSays) {
  torch::manual_seed(1);
  at::Tensor logits = torch::randn({4, 5});
  at::Tensor y = torch::tensor({0, 3, 4, 1}, torch::kLong);
  at::Tensor onehot = torch::one_hot(y, 5).to(torch::kFloat);
  // No smoothing: exactly cross-entropy on logits (no softmax before CE).
  at::Tensor plain = loss::classification_loss(logits, onehot, false);
  EXPECT_NEAR(plain.item<double>(), torch::nn::functional::cross_entropy(logits, y).item<double>(),
              1e-6);
  // Smoothing 0.1: (1 - e) CE + e * mean over classes of -log p, timm's formula.
  at::Tensor t = loss::smooth_targets(onehot, 0.1, false);
  EXPECT_NEAR(t[0][0].item<double>(), 0.9 + 0.1 / 5, 1e-7);
  EXPECT_NEAR(t[0][1].item<double>(), 0.1 / 5, 1e-7);
  at::Tensor lsm = torch::log_softmax(logits, 1);
  const double expected =
      (0.9 * -lsm.gather(1, y.unsqueeze(1)).squeeze(1) - 0.1 * lsm.mean(1)).mean().item<double>();
  at::Tensor smoothed = loss::classification_loss(logits, t, false);
  EXPECT_NEAR(smoothed.item<double>(), expected, 1e-6);
  EXPECT_GT(std::abs(smoothed.item<double>() - plain.item<double>()), 1e-3);
  // Multi-label: targets t (1 - e) + e / 2 into BCE with logits.
  at::Tensor m = torch::tensor({{1.f, 0.f}, {0.f, 1.f}});
  EXPECT_TRUE(torch::allclose(loss::smooth_targets(m, 0.2, true),
                              torch::tensor({{0.9f, 0.1f}, {0.1f, 0.9f}})));
  at::Tensor z = torch::randn({2, 2});
  EXPECT_NEAR(loss::classification_loss(z, m, true).item<double>(),
              torch::nn::functional::binary_cross_entropy_with_logits(z, m).item<double>(), 1e-6);
}

TEST(Classifier, ClassWeights) {
  // Single-label: n / (C' n_c); class weights scale each row's CE.
  at::Tensor t = torch::one_hot(torch::tensor({0, 0, 0, 1}, torch::kLong), 3).to(torch::kFloat);
  at::Tensor w = loss::balanced_class_weights(t, false);
  EXPECT_NEAR(w[0].item<double>(), 4.0 / (2 * 3), 1e-6);
  EXPECT_NEAR(w[1].item<double>(), 4.0 / (2 * 1), 1e-6);
  EXPECT_NEAR(w[2].item<double>(), 1.0, 1e-6);  // absent class
  at::Tensor logits = torch::randn({4, 3});
  at::Tensor y = torch::tensor({0, 0, 0, 1}, torch::kLong);
  at::Tensor per_row = torch::nn::functional::cross_entropy(
      logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  EXPECT_NEAR(loss::classification_loss(logits, t, false, w).item<double>(),
              (per_row * w.index_select(0, y)).mean().item<double>(), 1e-6);
  // Multi-label: pos_weight n_neg / n_pos.
  at::Tensor m = torch::tensor({{1.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {1.f, 0.f}});
  at::Tensor pw = loss::balanced_class_weights(m, true);
  EXPECT_NEAR(pw[0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(pw[1].item<double>(), 1.0, 1e-6);  // no positives
}

TEST(Classifier, MixupAndCutmix) {
  torch::manual_seed(2);
  at::Tensor x = torch::randn({4, 3, 8, 8});
  at::Tensor t = torch::one_hot(torch::tensor({0, 1, 2, 1}, torch::kLong), 3).to(torch::kFloat);
  auto a = loss::mix_batch(x, {}, t, 0.8, 0.0, 5), b = loss::mix_batch(x, {}, t, 0.8, 0.0, 5);
  EXPECT_TRUE(torch::equal(a.left, b.left));  // every draw from the seed
  EXPECT_FALSE(a.cutmix);
  EXPECT_GT(a.lam, 0.0);
  EXPECT_LT(a.lam, 1.0);
  EXPECT_TRUE(torch::allclose(a.left, x * a.lam + x.flip(0) * (1 - a.lam)));
  EXPECT_TRUE(torch::allclose(a.targets.sum(1), torch::ones({4})));
  auto c = loss::mix_batch(x, x, t, 0.0, 1.0, 9);
  EXPECT_TRUE(c.cutmix);
  // lam is the share of pixels kept from the row itself.
  const double kept = (c.left == x).to(torch::kFloat).mean().item<double>();
  EXPECT_NEAR(kept, c.lam, 1e-6);
  EXPECT_TRUE(torch::allclose(c.targets, t * c.lam + t.flip(0) * (1 - c.lam)));
  auto off = loss::mix_batch(x, {}, t, 0.0, 0.0, 1);
  EXPECT_TRUE(torch::equal(off.left, x));
}
