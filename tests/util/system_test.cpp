// Tests of util/system: the OpenMP wait defaults retclip puts into its environment
// (and when it leaves the user's settings alone), and the thread configuration.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>

#include "retclip/util/system.hpp"

using namespace retclip::util;

TEST(OpenMpDefaults, SetOnlyWhenTheUserSetNothing) {
  // libgomp's default spins 300000 rounds per barrier; retclip asks idle threads to sleep.
  auto v = openmp_env_defaults(nullptr, nullptr);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].first, "OMP_WAIT_POLICY");
  EXPECT_EQ(v[0].second, "PASSIVE");
  EXPECT_EQ(v[1].first, "RETCLIP_OPENMP_DEFAULTS");
  EXPECT_EQ(openmp_env_defaults("", "").size(), 2u);  // set but empty counts as unset
  EXPECT_TRUE(openmp_env_defaults("active", nullptr).empty());
  EXPECT_TRUE(openmp_env_defaults(nullptr, "300000").empty());
}

TEST(OpenMpDefaults, DescriptionSaysWhoChose) {
  ::unsetenv("GOMP_SPINCOUNT");
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  ::setenv("RETCLIP_OPENMP_DEFAULTS", "1", 1);
  EXPECT_EQ(openmp_wait_description(), "OMP_WAIT_POLICY=PASSIVE (retclip default)");
  ::setenv("GOMP_SPINCOUNT", "10000", 1);
  ::unsetenv("RETCLIP_OPENMP_DEFAULTS");
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  EXPECT_EQ(openmp_wait_description(),
            "OMP_WAIT_POLICY=passive, GOMP_SPINCOUNT=10000 (environment)");
  ::unsetenv("OMP_WAIT_POLICY");
  ::unsetenv("GOMP_SPINCOUNT");
  EXPECT_EQ(openmp_wait_description().rfind("libgomp defaults", 0), 0u);
}

TEST(Threads, ConfigureAndCount) {
  EXPECT_GE(available_cores(), 1);
  EXPECT_EQ(configure_threads(1), 1);
  ::unsetenv("LOCAL_WORLD_SIZE");
  EXPECT_EQ(configure_threads(0), available_cores());
}

TEST(Threads, RanksOnOneNodeShareTheCores) {
  // Before: every rank of `retclip launch --nproc N` took all the cores.
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  EXPECT_EQ(default_threads(), std::max<int64_t>(1, available_cores() / 2));
  ::setenv("LOCAL_WORLD_SIZE", "100000", 1);
  EXPECT_EQ(default_threads(), 1);
  ::unsetenv("LOCAL_WORLD_SIZE");
  EXPECT_EQ(default_threads(), available_cores());
}
