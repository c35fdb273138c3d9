// DistributedSampler: coverage and disjointness across ranks, identical shuffles,
// world-size independent state and exact resume.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "retclip/data/sampler.hpp"
#include "retclip/util/error.hpp"

using namespace retclip::data;

namespace {

std::vector<std::vector<int64_t>> run_epoch(DistributedSampler& s) {
  std::vector<std::vector<int64_t>> out;
  while (auto b = s.next()) out.push_back(*b);
  return out;
}

SamplerOptions opts(int64_t n, int64_t b, int64_t rank, int64_t world, bool drop_last = true) {
  SamplerOptions o;
  o.dataset_size = n;
  o.batch_size = b;
  o.rank = rank;
  o.world = world;
  o.seed = 1234;
  o.drop_last = drop_last;
  return o;
}

}  // namespace

TEST(Sampler, PermutationIsAPermutationAndDependsOnEpochAndSeed) {
  auto p0 = epoch_permutation(1000, 7, 0);
  auto sorted = p0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(p0, epoch_permutation(1000, 7, 0));
  EXPECT_NE(p0, epoch_permutation(1000, 7, 1));
  EXPECT_NE(p0, epoch_permutation(1000, 8, 0));
  EXPECT_EQ(epoch_permutation(1, 7, 0), std::vector<int64_t>{0});
}

TEST(Sampler, RanksAreDisjointAndCoverTheEpochWithDropLast) {
  const int64_t n = 103, b = 5, w = 4;
  std::set<int64_t> seen;
  int64_t total = 0;
  for (int64_t r = 0; r < w; ++r) {
    DistributedSampler s(opts(n, b, r, w));
    EXPECT_EQ(s.steps_per_epoch(), 5);
    auto batches = run_epoch(s);
    ASSERT_EQ(static_cast<int64_t>(batches.size()), 5);
    for (const auto& bt : batches) {
      ASSERT_EQ(static_cast<int64_t>(bt.size()), b);
      for (int64_t i : bt) {
        ASSERT_GE(i, 0);
        ASSERT_LT(i, n);
        seen.insert(i);
        ++total;
      }
    }
  }
  EXPECT_EQ(total, 100);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), 100);  // no index handed to two ranks
}

TEST(Sampler, PaddingWrapsWhenNotDroppingLast) {
  const int64_t n = 103, b = 5, w = 4;
  std::set<int64_t> seen;
  int64_t total = 0;
  for (int64_t r = 0; r < w; ++r) {
    DistributedSampler s(opts(n, b, r, w, /*drop_last=*/false));
    EXPECT_EQ(s.steps_per_epoch(), 6);
    for (const auto& bt : run_epoch(s)) {
      total += static_cast<int64_t>(bt.size());
      seen.insert(bt.begin(), bt.end());
    }
  }
  EXPECT_EQ(total, 120);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), n);  // every sample, 17 padded repeats
}

TEST(Sampler, ShufflesAreIdenticalAcrossRanks) {
  DistributedSampler a(opts(50, 4, 0, 3)), b(opts(50, 4, 2, 3));
  for (int64_t e = 0; e < 3; ++e) EXPECT_EQ(*a.permutation(e), *b.permutation(e));
  EXPECT_NE(*a.permutation(0), *a.permutation(1));
}

TEST(Sampler, TwoRanksTimesBEqualsOneRankTimesTwoB) {
  const int64_t n = 64, b = 4;
  DistributedSampler one(opts(n, 2 * b, 0, 1)), r0(opts(n, b, 0, 2)), r1(opts(n, b, 1, 2));
  auto e1 = run_epoch(one), e0 = run_epoch(r0), e2 = run_epoch(r1);
  ASSERT_EQ(e1.size(), e0.size());
  ASSERT_EQ(e1.size(), e2.size());
  for (size_t k = 0; k < e1.size(); ++k) {
    std::vector<int64_t> u = e0[k];
    u.insert(u.end(), e2[k].begin(), e2[k].end());
    EXPECT_EQ(u, e1[k]) << "global batch " << k;
  }
  EXPECT_EQ(one.state(), r0.state());
}

TEST(Sampler, EpochRollsOverAfterNullopt) {
  DistributedSampler s(opts(10, 3, 0, 1));
  auto first = run_epoch(s);
  EXPECT_EQ(first.size(), 3u);
  EXPECT_EQ(s.state(), (SamplerState{1, 0}));
  auto second = run_epoch(s);
  EXPECT_EQ(second.size(), 3u);
  EXPECT_NE(first, second);
}

TEST(Sampler, ResumeMidEpochContinuesExactly) {
  DistributedSampler full(opts(40, 3, 1, 2));
  auto ref = run_epoch(full);
  DistributedSampler part(opts(40, 3, 1, 2));
  for (int k = 0; k < 4; ++k) part.next();
  SamplerState st = part.state();
  EXPECT_EQ(st.consumed, 4 * 6);
  DistributedSampler resumed(opts(40, 3, 1, 2));
  resumed.set_state(st);
  auto rest = run_epoch(resumed);
  ASSERT_EQ(rest.size() + 4, ref.size());
  for (size_t k = 0; k < rest.size(); ++k) EXPECT_EQ(rest[k], ref[k + 4]);
}

TEST(Sampler, ResumeWithAnotherWorldSizeKeepsTheGlobalPosition) {
  // Saved by 1 rank x 4 after 3 batches; resumed by 2 ranks x 2: same global stream.
  DistributedSampler one(opts(48, 4, 0, 1));
  for (int k = 0; k < 3; ++k) one.next();
  const SamplerState st = one.state();
  auto rest1 = run_epoch(one);
  DistributedSampler r0(opts(48, 2, 0, 2)), r1(opts(48, 2, 1, 2));
  r0.set_state(st);
  r1.set_state(st);
  auto a = run_epoch(r0), b = run_epoch(r1);
  ASSERT_EQ(a.size(), rest1.size());
  for (size_t k = 0; k < a.size(); ++k) {
    std::vector<int64_t> u = a[k];
    u.insert(u.end(), b[k].begin(), b[k].end());
    EXPECT_EQ(u, rest1[k]);
  }
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(DistributedSampler(opts(0, 1, 0, 1)), retclip::UsageError);
  EXPECT_THROW(DistributedSampler(opts(10, 0, 0, 1)), retclip::UsageError);
  EXPECT_THROW(DistributedSampler(opts(10, 2, 2, 2)), retclip::UsageError);
  EXPECT_THROW(DistributedSampler(opts(10, 6, 0, 2)), retclip::UsageError);  // drop_last: empty
  EXPECT_NO_THROW(DistributedSampler(opts(10, 6, 0, 2, /*drop_last=*/false)));
}
