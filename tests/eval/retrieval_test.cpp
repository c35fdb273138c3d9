// recall@k on hand-made embeddings with known ranks, with and without repeated reports.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "retclip/eval/retrieval.hpp"
#include "retclip/util/error.hpp"

using retclip::eval::group_embeddings;
using retclip::eval::group_texts;
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
  auto r = retrieval_recall(img, txt, {1, 2}, {}, /*chunk=*/4);
  EXPECT_DOUBLE_EQ(r.i2t.at(1), 0.0);
  EXPECT_DOUBLE_EQ(r.i2t.at(2), 1.0);
}

TEST(Retrieval, NearButDistinctTextsStayDistinct) {
  // Texts 0 and 1 are close but not the same report: two targets.
  auto img = torch::tensor({{1.0, 0.0}, {1.0, 0.0}, {0.0, 1.0}});
  auto txt = torch::tensor({{1.0, 0.0}, {0.9, 0.1}, {0.0, 1.0}});
  auto r = retrieval_recall(img, txt, {1});
  // Row 1's own text (0.9,0.1) scores below text 0 (1,0): rank 1 -> miss at k=1.
  EXPECT_NEAR(r.i2t.at(1), 2.0 / 3.0, 1e-12);
}

TEST(Retrieval, RejectsMismatchedShapes) {
  EXPECT_THROW(retrieval_recall(torch::zeros({3, 2}), torch::zeros({4, 2}), {1}), retclip::Error);
  EXPECT_THROW(retrieval_recall(torch::eye(3), torch::eye(3), {0}), retclip::Error);
}

TEST(Retrieval, RepeatedReportsFormOneTarget) {
  // 6 patients, 4 share "normal" (text embedding e0); 2 have distinct reports (e1, e2).
  // A collapsed model maps every image onto e0: the untied rule would give i2t R@1 = 4/6.
  std::vector<std::string> reports = {"normal", "normal", "drusen", "normal", "normal", "cup"};
  auto txt = torch::tensor({{1.0, 0.0, 0.0},
                            {1.0, 0.0, 0.0},
                            {0.0, 1.0, 0.0},
                            {1.0, 0.0, 0.0},
                            {1.0, 0.0, 0.0},
                            {0.0, 0.0, 1.0}});
  auto img = torch::tensor({{1.0, 0.0, 0.0}}).repeat({6, 1});
  for (const auto& groups : {group_texts(reports), std::vector<int64_t>{}}) {
    auto r = retrieval_recall(img, txt, {1, 2}, groups);
    EXPECT_EQ(r.distinct_texts, 3);
    // image->text: only the "normal" report is a hit, and it counts once of 3 reports.
    EXPECT_NEAR(r.i2t.at(1), 1.0 / 3.0, 1e-12);
    EXPECT_NEAR(r.chance.at(1), 1.0 / 3.0, 1e-12);
    EXPECT_NEAR(r.chance.at(2), 2.0 / 3.0, 1e-12);
    EXPECT_NEAR(r.i2t.at(2), 2.0 / 3.0, 1e-12);  // the other two reports tie for place 2
    // text->image: every image ties, so a report's images share the places with the
    // others: normal 4 of 6, drusen 1 of 6, cup 1 of 6 -> chance.
    EXPECT_NEAR(r.t2i.at(1), (4.0 / 6 + 1.0 / 6 + 1.0 / 6) / 3.0, 1e-12);
  }
  // text->image chance for k=1: reports of 4, 1 and 1 of 6 images: (4/6 + 1/6 + 1/6) / 3.
  auto r = retrieval_recall(img, txt, {1}, group_texts(reports));
  EXPECT_NEAR(r.chance_t2i.at(1), 1.0 / 3.0, 1e-12);
}

TEST(Retrieval, GoodModelOnDuplicatesScoresOne) {
  // Images of each report sit on that report's direction: every report and image is found.
  std::vector<std::string> reports = {"a", "b", "a", "c", "a", "b"};
  auto basis = torch::eye(3);
  auto groups = group_texts(reports);
  std::vector<at::Tensor> rows;
  for (int64_t gid : groups) rows.push_back(basis[gid]);
  auto txt = torch::stack(rows);
  auto img = txt + 0.01 * torch::randn({6, 3});
  auto r = retrieval_recall(img, txt, {1}, groups);
  EXPECT_EQ(r.distinct_texts, 3);
  EXPECT_DOUBLE_EQ(r.i2t.at(1), 1.0);
  EXPECT_DOUBLE_EQ(r.t2i.at(1), 1.0);
  // Without duplicates the definitions are the plain per-pair recall.
  auto plain = retrieval_recall(torch::eye(4), torch::eye(4), {1, 3});
  EXPECT_EQ(plain.distinct_texts, 4);
  EXPECT_DOUBLE_EQ(plain.chance_t2i.at(3), 3.0 / 4.0);
}

TEST(Retrieval, EmbeddingGroupsMatchTextGroups) {
  torch::manual_seed(0);
  auto base = torch::randn({3, 16});
  auto txt = torch::stack({base[0], base[1], base[0] * 2.0, base[2], base[1] + 1e-7});
  EXPECT_EQ(group_embeddings(txt, 1e-5, /*chunk=*/2), (std::vector<int64_t>{0, 1, 0, 2, 1}));
}
