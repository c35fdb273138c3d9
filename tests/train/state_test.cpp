// Tests of the run state: trainer.json round trip, the skip counters and their limit,
// the fp16 loss-scaler rule, checkpoint save + load through the store (weights,
// optimizer moments and RNG restored), and the resume config diff.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "../support/e2e.hpp"
#include "retclip/dist/comm.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/state.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;

namespace {

train::StepResult step_result(bool skipped) {
  train::StepResult r;
  r.skipped = skipped;
  r.grad_norm = skipped ? std::nan("") : 1.0;
  return r;
}

}  // namespace

TEST(TrainState, JsonRoundTripKeepsEveryField) {
  train::TrainState s;
  s.step = 42;
  s.skipped = 3;
  s.consecutive_skips = 1;
  s.scaler.scale = 1024;
  s.scaler.good_steps = 17;
  s.data = {{"epoch", 2}, {"position", 96}};
  s.world_size = 4;
  s.config_hash = "abc";
  train::TrainState t = train::TrainState::from_json(s.to_json(), "trainer.json");
  EXPECT_EQ(t.step, 42);
  EXPECT_EQ(t.skipped, 3);
  EXPECT_EQ(t.consecutive_skips, 1);
  EXPECT_EQ(t.scaler.scale, 1024);
  EXPECT_EQ(t.scaler.good_steps, 17);
  EXPECT_EQ(t.data, s.data);
  EXPECT_EQ(t.world_size, 4);
  EXPECT_EQ(t.config_hash, "abc");
  // A file that lacks a key names itself and the key.
  nlohmann::json broken = s.to_json();
  broken.erase("loss_scale");
  try {
    train::TrainState::from_json(broken, "x/trainer.json");
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("x/trainer.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("loss_scale"), std::string::npos) << e.what();
  }
}

TEST(TrainState, CountsSkipsAndStopsAfterTheLimit) {
  train::TrainState s;
  s.count(step_result(false), 3);
  s.count(step_result(true), 3);
  s.count(step_result(true), 3);
  EXPECT_EQ(s.step, 3);
  EXPECT_EQ(s.skipped, 2);
  EXPECT_EQ(s.consecutive_skips, 2);
  s.count(step_result(false), 3);
  EXPECT_EQ(s.consecutive_skips, 0);
  s.count(step_result(true), 3);
  s.count(step_result(true), 3);
  EXPECT_THROW(s.count(step_result(true), 3), Error);  // third in a row
  EXPECT_EQ(s.skipped, 5);
}

TEST(LossScaler, HalvesOnNonFiniteAndDoublesAfter2000GoodSteps) {
  train::LossScaler off;
  off.update(false);
  EXPECT_EQ(off.factor(), 1.0);  // fp32 / bf16: inert
  EXPECT_EQ(off.scale, 65536.0);
  train::LossScaler s;
  s.enabled = true;
  s.update(false);
  EXPECT_EQ(s.factor(), 32768.0);
  for (int i = 0; i < 1999; ++i) s.update(true);
  EXPECT_EQ(s.factor(), 32768.0);
  s.update(true);
  EXPECT_EQ(s.factor(), 65536.0);
  EXPECT_EQ(s.good_steps, 0);
  s.scale = 1.5;
  s.update(false);
  EXPECT_EQ(s.scale, 1.0);  // never below 1
}

TEST(Checkpoint, SaveThenLoadRestoresWeightsOptimizerAndRandomState) {
  const fs::path dir = test::fresh_dir("retclip-state-test", "roundtrip");
  auto comm = dist::Comm::single();
  config::ModelConfig mc;
  mc.vision.preset = "vit-micro";
  mc.text.preset = "bert-micro";
  torch::manual_seed(1);
  model::RetClip net(model::retclip_options(mc, 50));
  auto built = train::build_adamw(*net, config::OptimConfig{});
  // One optimizer step, so that the AdamW moments are not zero.
  for (const auto& p : net->parameters()) p.mutable_grad() = torch::randn_like(p);
  built.optimizer->step();
  train::TrainState st;
  st.step = 7;
  st.data = {{"position", 5}};
  io::CheckpointStore store(dir, {});
  const train::CheckpointParts parts{*net, *built.optimizer, at::kCPU, "# config\n"};
  const fs::path written = train::save_checkpoint(store, st, parts, *comm, 0);
  EXPECT_EQ(written.filename(), "step-00000007");
  for (const char* f : {io::CheckpointLayout::kWeights, io::CheckpointLayout::kOptimizer,
                        io::CheckpointLayout::kTrainerState, io::CheckpointLayout::kConfig})
    EXPECT_TRUE(fs::exists(written / f)) << f;
  EXPECT_TRUE(fs::exists(written / "rng_cpu.bin"));
  const at::Tensor next_draw = torch::rand({4});  // what the saved RNG state draws next

  torch::manual_seed(2);
  model::RetClip other(model::retclip_options(mc, 50));
  auto other_opt = train::build_adamw(*other, config::OptimConfig{});
  const train::CheckpointParts into{*other, *other_opt.optimizer, at::kCPU, ""};
  auto info = store.resolve("auto");
  ASSERT_TRUE(info.has_value());
  train::TrainState back = train::load_checkpoint(*info, into, *comm, 123);
  EXPECT_EQ(back.step, 7);
  EXPECT_EQ(back.data, st.data);
  auto a = net->named_parameters(), b = other->named_parameters();
  for (const auto& p : a) EXPECT_TRUE(p.value().equal(b[p.key()])) << p.key();
  EXPECT_TRUE(torch::rand({4}).equal(next_draw));
  // The AdamW moments came back too: the same gradients now give the same update.
  torch::manual_seed(9);
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : a) grads[p.key()] = torch::randn_like(p.value());
  for (const auto& p : a) p.value().mutable_grad() = grads[p.key()].clone();
  for (const auto& p : b) p.value().mutable_grad() = grads[p.key()].clone();
  built.optimizer->step();
  other_opt.optimizer->step();
  for (const auto& p : a) EXPECT_TRUE(p.value().equal(b[p.key()])) << "after a step: " << p.key();
}

TEST(Checkpoint, ResumeConfigChangesIgnoreLoggingButNameTheRunLength) {
  config::Config now = config::load(
      "", {"model.text.layers=3", "log.interval=7", "train.steps=99", "checkpoint.every_steps=3"});
  const std::string before = config::to_yaml(config::load("", {}));
  auto changes = train::resume_config_changes(before, now);
  ASSERT_EQ(changes.size(), 2u);
  std::string all = changes[0] + "\n" + changes[1];
  EXPECT_NE(all.find("model.text.layers"), std::string::npos) << all;
  // Before: a resumed pretraining run with another train.steps said nothing, although
  // the cosine schedule then follows the new length (fine-tuning said it).
  EXPECT_NE(all.find("train.steps: 0 -> 99 (the learning-rate schedule follows the new length"),
            std::string::npos)
      << all;
}

TEST(CheckpointLayout, RandomStateFileNames) {
  EXPECT_EQ(io::CheckpointLayout::rng_file("cpu", 0), "rng_cpu.bin");
  EXPECT_EQ(io::CheckpointLayout::rng_file("cuda", 3), "rng_cuda.rank3.bin");
}
