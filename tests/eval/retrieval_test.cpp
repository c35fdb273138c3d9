// recall@k on hand-made embeddings with known ranks.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "retclip/eval/retrieval.hpp"
#include "retclip/util/error.hpp"

using retclip::eval::retrieval_recall;

TEST(Retrieval, PerfectPairsGiveRecallOne) {
  auto x = torch::eye(8);
  auto r = retrieval_recall(x, x, {1, 5});
  EXPECT_DOUBLE_EQ(r.i2t.at(1), 1.0);
  EXPECT_DOUBLE_EQ(r.t2i.at(5), 1.0);
  EXPECT_DOUBLE_EQ(r.chance.at(5), 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(r.mean_recall(), 1.0);
}

TEST(Retrieval, ShiftedPairsRankSecond) {
  // Image i is closest to text i+1 and second closest to its own text i.
  const int64_t n = 6;
  auto txt = torch::eye(n);
  auto img = torch::zeros({n, n});
  for (int64_t i = 0; i < n; ++i) {
    img[i][(i + 1) % n] = 1.0;
    img[i][i] = 0.5;
  }
  auto r = retrieval_recall(img, txt, {1, 2}, /*chunk=*/4);
  EXPECT_DOUBLE_EQ(r.i2t.at(1), 0.0);
  EXPECT_DOUBLE_EQ(r.i2t.at(2), 1.0);
}

TEST(Retrieval, TiesCountAgainstTheRow) {
  // Identical texts: the pessimistic rule still counts the pair at rank 0 (nothing
  // scores strictly higher), so ties neither help nor hurt beyond that.
  auto img = torch::tensor({{1.0, 0.0}, {1.0, 0.0}, {0.0, 1.0}});
  auto txt = torch::tensor({{1.0, 0.0}, {0.9, 0.1}, {0.0, 1.0}});
  auto r = retrieval_recall(img, txt, {1});
  // Row 1's own text (0.9,0.1) scores below text 0 (1,0): rank 1 -> miss at k=1.
  EXPECT_NEAR(r.i2t.at(1), 2.0 / 3.0, 1e-12);
}

TEST(Retrieval, RejectsMismatchedShapes) {
  EXPECT_THROW(retrieval_recall(torch::zeros({3, 2}), torch::zeros({4, 2}), {1}),
               retclip::Error);
  EXPECT_THROW(retrieval_recall(torch::eye(3), torch::eye(3), {0}), retclip::Error);
}
