// LR schedules against values from a Python replica of OpenCLIP's scheduler.py
// (`_warmup_lr`, `cosine_lr`, `const_lr`, `const_lr_cooldown`), printed with repr().
#include <gtest/gtest.h>

#include "retclip/train/schedule.hpp"
#include "retclip/util/error.hpp"

namespace {

using retclip::config::OptimConfig;
using retclip::train::lr_at;

OptimConfig make(const std::string& schedule, double lr, int64_t warmup, double min_lr = 0,
                 int64_t cooldown = 0) {
  OptimConfig c;
  c.schedule = schedule;
  c.lr = lr;
  c.warmup_steps = warmup;
  c.min_lr = min_lr;
  c.cooldown_steps = cooldown;
  return c;
}

void expect_rel(double got, double want, int64_t step) {
  EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::abs(want)) + 1e-18)
      << "step " << step << ": got " << got << ", OpenCLIP replica " << want;
}

TEST(Schedule, CosineMatchesOpenClip) {
  // RET-CLIP reference defaults: lr 3e-5, warmup 50; 1000 steps.
  auto c = make("cosine", 3e-5, 50);
  const std::vector<std::pair<int64_t, double>> want = {
      {0, 6e-07},   {1, 1.2e-06},
      {49, 3e-05},  {50, 3e-05},
      {51, 2.9999917981201608e-05}, {100, 2.9795419551040836e-05},
      {500, 1.623869018208499e-05}, {999, 8.201879839297988e-11}};
  for (auto [s, v] : want) expect_rel(lr_at(c, s, 1000), v, s);
}

TEST(Schedule, CosineWithMinLr) {
  auto c = make("cosine", 1e-4, 10, 1e-6);
  expect_rel(lr_at(c, 0, 100), 1e-5, 0);
  expect_rel(lr_at(c, 10, 100), 1e-4, 10);
  expect_rel(lr_at(c, 11, 100), 9.996984593744525e-05, 11);
  expect_rel(lr_at(c, 50, 100), 5.909558479451306e-05, 50);
  expect_rel(lr_at(c, 99, 100), 1.0301540625547597e-06, 99);
  // Past the end the rate stays at min_lr (OpenCLIP would climb back up the cosine).
  expect_rel(lr_at(c, 100, 100), 1e-6, 100);
  expect_rel(lr_at(c, 150, 100), 1e-6, 150);
}

TEST(Schedule, Constant) {
  auto c = make("constant", 1e-3, 10);
  expect_rel(lr_at(c, 0, 100), 1e-4, 0);
  expect_rel(lr_at(c, 9, 100), 1e-3, 9);
  expect_rel(lr_at(c, 10, 100), 1e-3, 10);
  expect_rel(lr_at(c, 500, 100), 1e-3, 500);
}

TEST(Schedule, ConstCooldownMatchesOpenClip) {
  auto c = make("const-cooldown", 1e-3, 5, 1e-5, 20);
  const std::vector<std::pair<int64_t, double>> want = {
      {0, 0.0002}, {4, 0.001},     {5, 0.001},   {79, 0.001},
      {80, 0.001}, {81, 0.0009505}, {90, 0.000505}, {99, 5.9500000000000044e-05}};
  for (auto [s, v] : want) expect_rel(lr_at(c, s, 100), v, s);
  expect_rel(lr_at(c, 100, 100), 1e-5, 100);
}

TEST(Schedule, NoWarmupStartsAtBase) {
  auto c = make("cosine", 2e-4, 0);
  expect_rel(lr_at(c, 0, 10), 2e-4, 0);
  // Monotone non-increasing after warmup.
  double prev = lr_at(c, 0, 10);
  for (int64_t s = 1; s <= 12; ++s) {
    double v = lr_at(c, s, 10);
    EXPECT_LE(v, prev) << "step " << s;
    prev = v;
  }
}

TEST(Schedule, UnknownNameIsUsageError) {
  auto c = make("linear", 1e-3, 0);
  try {
    lr_at(c, 0, 10);
    FAIL() << "expected a UsageError";
  } catch (const retclip::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("optim.schedule"), std::string::npos) << e.what();
  }
}

}  // namespace
