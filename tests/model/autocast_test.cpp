// The precision names and the autocast scope: inert in fp32 and on CPU, restored after.
#include "retclip/model/autocast.hpp"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "retclip/util/error.hpp"

using namespace retclip;

TEST(Autocast, NamesRoundTrip) {
  for (auto p : {model::Precision::kFp32, model::Precision::kBf16, model::Precision::kFp16})
    EXPECT_EQ(model::parse_precision(model::precision_name(p)), p);
  EXPECT_THROW(model::parse_precision("fp8"), UsageError);
}

TEST(Autocast, ScopeIsInertOnCpu) {
  const bool before = at::autocast::is_autocast_enabled(at::kCUDA);
  {
    model::AutocastScope scope(model::Precision::kBf16, c10::Device(c10::kCPU));
    EXPECT_EQ(at::autocast::is_autocast_enabled(at::kCUDA), before);
  }
  EXPECT_EQ(at::autocast::is_autocast_enabled(at::kCUDA), before);
}
