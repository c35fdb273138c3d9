// Precision resolution and the autocast scope: inert in fp32 and on CPU, restored after.
#include "retclip/model/autocast.hpp"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "retclip/util/error.hpp"

using namespace retclip;

TEST(Autocast, AutoIsBf16OnCudaAndFp32Elsewhere) {
  const c10::Device cpu(c10::kCPU), cuda(c10::kCUDA, 0);
  EXPECT_EQ(model::resolve_precision(model::Precision::kAuto, cpu), model::Precision::kFp32);
  EXPECT_EQ(model::resolve_precision(model::Precision::kAuto, cuda), model::Precision::kBf16);
  for (auto p : {model::Precision::kFp32, model::Precision::kBf16, model::Precision::kFp16}) {
    EXPECT_EQ(model::resolve_precision(p, cpu), p);
    EXPECT_EQ(model::resolve_precision(p, cuda), p);
  }
  EXPECT_THROW(model::AutocastScope(model::Precision::kAuto, cpu), Error);
}

TEST(Autocast, ScopeIsInertOnCpu) {
  const bool before = at::autocast::is_autocast_enabled(at::kCUDA);
  {
    model::AutocastScope scope(model::Precision::kBf16, c10::Device(c10::kCPU));
    EXPECT_EQ(at::autocast::is_autocast_enabled(at::kCUDA), before);
  }
  EXPECT_EQ(at::autocast::is_autocast_enabled(at::kCUDA), before);
}
