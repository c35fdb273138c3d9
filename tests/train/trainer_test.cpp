// End-to-end tests of `retclip train` through the binary: exact resume after SIGKILL,
// a crash in the middle of a checkpoint write, SIGINT (preemption), export + embed.
// Data: a small synthetic set made once per suite (retclip synth / tokenizer / pack).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../support/e2e.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kBin = retclip::test::retclip_bin();
fs::path g_root;

int run(const std::string& cmd) {
  int rc = std::system((cmd + " >> " + (g_root / "commands.log").string() + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

// Exit status of a shell command, where death by a signal reads 128 + signal.
int run_status(const std::string& cmd, const std::string& env = "") {
  return retclip::test::run_logged(cmd, g_root / "commands.log", env);
}

// The --set overrides of the test runs (train and bench take the same).
std::string run_sets(int steps) {
  const fs::path d = g_root / "data";
  std::ostringstream c;
  c << " --set model.vision.preset=vit-micro --set model.text.preset=bert-micro"
    << " --set model.embed_dim=0 --set data.image_size=32 --set data.context_length=32"
    << " --set data.train=" << (d / "shards-train").string()
    << " --set data.val=" << (d / "shards-val").string()
    << " --set data.tokenizer.path=" << (d / "tok.model").string()
    << " --set train.batch_size=16 --set train.steps=" << steps
    << " --set train.threads=1 --set data.workers=2 --set train.deterministic=true"
    << " --set optim.warmup_steps=3 --set checkpoint.every_steps=4 --set checkpoint.keep_last=10"
    << " --set data.format=auto --set log.interval=1";
  return c.str();
}

std::string train_cmd(const fs::path& run_dir, int steps, const std::string& extra = "") {
  return "exec " + kBin + " train --config " + RETCLIP_SOURCE_DIR + "/configs/tiny-cpu.yaml" +
         run_sets(steps) + " --set log.dir=" + run_dir.string() + " " + extra;
}

// Every metrics.jsonl record that has `key`, by step.
std::map<int64_t, double> metric(const fs::path& run_dir, const std::string& key) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::map<int64_t, double> out;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j.contains(key)) out[j["step"].get<int64_t>()] = j[key].get<double>();
  }
  return out;
}

std::vector<int64_t> checkpoint_steps(const fs::path& run_dir) {
  std::vector<int64_t> out;
  for (const auto& e : fs::directory_iterator(run_dir / "checkpoints"))
    if (fs::exists(e.path() / "COMPLETE"))
      out.push_back(std::stoll(e.path().filename().string().substr(5)));
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<double> step_losses(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::map<int64_t, double> by_step;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j.contains("train/loss")) by_step[j["step"].get<int64_t>()] = j["train/loss"].get<double>();
  }
  std::vector<double> out;
  for (auto& [s, v] : by_step) out.push_back(v);
  return out;
}

std::string weights_of(const fs::path& run_dir, int step) {
  return retclip::util::read_file(run_dir / "checkpoints" / retclip::test::checkpoint_name(step) /
                                  "model.safetensors");
}

class TrainE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_root = retclip::test::fresh_dir("retclip-train-e2e");
    ASSERT_EQ(retclip::test::make_synthetic_shards(g_root, g_root / "commands.log"), 0);
    // The reference: 12 uninterrupted steps.
    ASSERT_EQ(run_status(train_cmd(g_root / "ref", 12)), 0);
  }
  static void TearDownTestSuite() {
    if (!::testing::Test::HasFailure()) retclip::util::remove_tree(g_root);
  }
};

TEST_F(TrainE2E, ReferenceRunLearnsAndLogs) {
  auto losses = step_losses(g_root / "ref");
  ASSERT_EQ(losses.size(), 12u);
  // It learns. Twelve steps only reach the uniform loss, 3 ln 16 = 8.318 for batches of 16;
  // 80 steps at a higher rate go clearly below it (about 7.8 on the last 10 steps).
  const fs::path learn = g_root / "learn";
  ASSERT_EQ(run_status(train_cmd(learn, 80,
                                 "--set optim.lr=2e-3 --set optim.warmup_steps=5"
                                 " --set checkpoint.every_steps=1000")),
            0);
  const auto l = step_losses(learn);
  ASSERT_EQ(l.size(), 80u);
  double first = 0, last = 0;
  for (int i = 0; i < 10; ++i) {
    first += l[i] / 10;
    last += l[70 + i] / 10;
  }
  const double uniform = 3 * std::log(16.0);
  std::cout << "loss: first 10 steps " << first << ", last 10 steps " << last << " (uniform "
            << uniform << ")\n";
  EXPECT_LT(last, uniform - 0.15);
  EXPECT_LT(last, first - 0.15);
  // All six in-batch accuracies and the three per-level losses are logged every step.
  for (const char* key : {"train/acc_patient_i2t", "train/acc_patient_t2i", "train/acc_left_i2t",
                          "train/acc_left_t2i", "train/acc_right_i2t", "train/acc_right_t2i",
                          "train/loss_patient", "train/loss_left", "train/loss_right"})
    EXPECT_EQ(metric(g_root / "ref", key).size(), 12u) << key;
  EXPECT_TRUE(fs::exists(g_root / "ref" / "config.yaml"));
  EXPECT_TRUE(fs::exists(g_root / "ref" / "checkpoints" / "step-00000012" / "COMPLETE"));
  EXPECT_TRUE(fs::exists(g_root / "ref" / "train.log"));
}

TEST_F(TrainE2E, ResumeAfterSigkillIsBitExact) {
  const fs::path r = g_root / "killed";
  // SIGKILL right after step 10: steps 9-10 are lost and redone from checkpoint 8.
  EXPECT_EQ(run_status(train_cmd(r, 12), "RETCLIP_FAULT_KILL_AFTER_STEP=10"), 128 + SIGKILL);
  EXPECT_FALSE(fs::exists(r / "checkpoints" / "step-00000012"));
  ASSERT_EQ(run_status(train_cmd(r, 12, "--resume auto")), 0);
  EXPECT_EQ(step_losses(r), step_losses(g_root / "ref"));
  EXPECT_TRUE(weights_of(r, 12) == weights_of(g_root / "ref", 12))
      << "weights after resume differ from the uninterrupted run";
}

TEST_F(TrainE2E, CrashDuringCheckpointWriteKeepsPreviousCheckpoint) {
  const fs::path r = g_root / "torn";
  EXPECT_EQ(run_status(train_cmd(r, 12), "RETCLIP_FAULT_KILL_IN_CHECKPOINT=8"), 128 + SIGKILL);
  EXPECT_FALSE(fs::exists(r / "checkpoints" / "step-00000008"));
  EXPECT_TRUE(fs::exists(r / "checkpoints" / "step-00000004" / "COMPLETE"));
  ASSERT_EQ(run_status(train_cmd(r, 12, "--resume auto")), 0);
  EXPECT_TRUE(weights_of(r, 12) == weights_of(g_root / "ref", 12));
}

TEST_F(TrainE2E, SigintWritesCheckpointAndExitsZero) {
  const fs::path r = g_root / "preempted";
  pid_t pid = fork();
  if (pid == 0) {
    std::string cmd = train_cmd(r, 100000) + " >> " + (g_root / "commands.log").string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(r / "checkpoints" / "step-00000004" / "COMPLETE") &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  kill(pid, SIGINT);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  // The step in progress is finished and checkpointed: a checkpoint newer than step 4.
  int newest = 0;
  for (auto& e : fs::directory_iterator(r / "checkpoints"))
    if (fs::exists(e.path() / "COMPLETE"))
      newest = std::max(newest, std::stoi(e.path().filename().string().substr(5)));
  EXPECT_GT(newest, 4);
  EXPECT_LT(newest, 100000);
}

TEST_F(TrainE2E, ExportAndEmbed) {
  const fs::path out = g_root / "export";
  ASSERT_EQ(run(kBin + " export --checkpoint " + (g_root / "ref").string() + " --out " +
                out.string() + " --parts vision,text,full"),
            0);
  for (const char* f :
       {"vision.safetensors", "text.safetensors", "full.safetensors", "retclip.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  json side = json::parse(retclip::util::read_file(out / "retclip.json"));
  EXPECT_EQ(side["vision"]["image_size"], 32);
  EXPECT_EQ(side["text"]["context_length"], 32);
  const fs::path emb = g_root / "emb.safetensors";
  ASSERT_EQ(
      run(kBin + " embed --weights " + out.string() + " --manifest " +
          (g_root / "data" / "val.csv").string() + " --out " + emb.string() + " --save-inputs"),
      0);
  EXPECT_TRUE(fs::exists(emb));
  // The exported weights in the PyTorch reference reproduce retclip's embeddings.
  std::string py = std::string("python3 ") + RETCLIP_SOURCE_DIR + "/tests/python/embed_check.py " +
                   out.string() + " " + emb.string();
  if (std::system("python3 -c 'import torch, safetensors' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with torch and safetensors is needed for the reference check";
  EXPECT_EQ(run(py), 0) << "see " << (g_root / "commands.log").string();
}

TEST_F(TrainE2E, EvalReportsRecallAndChance) {
  const fs::path out = g_root / "eval.json";
  ASSERT_EQ(run(kBin + " eval --checkpoint " + (g_root / "ref").string() + " --data " +
                (g_root / "data" / "shards-val").string() + " --out " + out.string()),
            0);
  json j = json::parse(retclip::util::read_file(out));
  EXPECT_EQ(j["patients"], 32);
  // Tie-aware: image->text chance is k over the distinct reports (the 32-token shards
  // leave only a few).
  const double distinct = j["distinct_reports"].get<double>();
  EXPECT_GE(distinct, 2);
  EXPECT_NEAR(j["chance_r@5"].get<double>(), std::min(1.0, 5.0 / distinct), 1e-12);
  // The same checkpoint on the same split: eval reproduces the run's final validation.
  const auto final_val = metric(g_root / "ref", "val/patient_i2t_r@10");
  ASSERT_EQ(final_val.count(12), 1u);
  EXPECT_NEAR(j["val/patient_i2t_r@10"].get<double>(), final_val.at(12), 1e-12);
  EXPECT_NEAR(j["val/loss"].get<double>(), metric(g_root / "ref", "val/loss").at(12), 1e-6);
}

TEST_F(TrainE2E, BenchRunsTheTrainingStep) {
  // `retclip bench` on the training loader: its first three steps are the training run's.
  const fs::path out = g_root / "bench.json";
  ASSERT_EQ(run(kBin + " bench --config " + RETCLIP_SOURCE_DIR + "/configs/tiny-cpu.yaml" +
                run_sets(12) + " --data loader --warmup 0 --steps 3 --json " + out.string()),
            0);
  json j = json::parse(retclip::util::read_file(out));
  const auto ref = step_losses(g_root / "ref");
  ASSERT_EQ(j["step_losses"].size(), 3u);
  for (int i = 0; i < 3; ++i)
    EXPECT_NEAR(j["step_losses"][i].get<double>(), ref[i], 1e-6) << "step " << i + 1;
}

TEST_F(TrainE2E, ValidationAndCheckpointsFollowTheirKeys) {
  // 64 training patients / 16 = 4 steps per epoch. Steps decide unless a key asks for
  // epoch ends: val_every 6 validates at 6 (and after the last step), not at 4 or 8;
  // every_steps 5 checkpoints at 5, 10 (and the last step), not at epoch ends.
  const fs::path a = g_root / "by-steps";
  ASSERT_EQ(run_status(train_cmd(a, 12, "--set train.val_every=6 --set checkpoint.every_steps=5")),
            0);
  auto val_a = metric(a, "val/loss");
  EXPECT_EQ(val_a.size(), 2u);
  EXPECT_EQ(val_a.count(6), 1u);
  EXPECT_EQ(val_a.count(12), 1u);
  EXPECT_EQ(checkpoint_steps(a), (std::vector<int64_t>{5, 10, 12}));
  // val_every 0 validates at epoch ends; checkpoint.every_epochs 1 adds epoch-end checkpoints.
  const fs::path b = g_root / "by-epochs";
  ASSERT_EQ(run_status(train_cmd(b, 12,
                                 "--set train.val_every=0 --set checkpoint.every_steps=5"
                                 " --set checkpoint.every_epochs=1")),
            0);
  auto val_b = metric(b, "val/loss");
  EXPECT_EQ(val_b.size(), 3u);
  EXPECT_EQ(val_b.count(4), 1u);
  EXPECT_EQ(val_b.count(8), 1u);
  EXPECT_EQ(checkpoint_steps(b), (std::vector<int64_t>{4, 5, 8, 10, 12}));
}

TEST_F(TrainE2E, ProbeRunsDuringTrainingAndIsLogged) {
  // eval.probe on the held-out patients' per-eye findings, re-split (half test): probed at
  // steps 4 and 8 and after the last step (10), on test and validation.
  const std::string probe =
      " --set eval.probe.every_steps=4 --set eval.probe.level=eye"
      " --set eval.probe.ignore_split=true --set eval.probe.test_fraction=0.5"
      " --set eval.probe.data=" +
      (g_root / "data" / "val.csv").string();
  const fs::path d = g_root / "probe";
  ASSERT_EQ(run_status(train_cmd(d, 10, probe + " --set checkpoint.every_steps=1000")), 0);
  for (const char* key : {"probe/auroc_macro", "probe/val_auroc_macro", "probe/chosen_c"}) {
    auto m = metric(d, key);
    EXPECT_EQ(m.size(), 3u) << key;
    for (int64_t step : {4, 8, 10}) EXPECT_EQ(m.count(step), 1u) << key << " at step " << step;
  }
  for (const auto& [step, v] : metric(d, "probe/auroc_macro")) {
    EXPECT_GE(v, 0.0) << step;
    EXPECT_LE(v, 1.0) << step;
  }
  EXPECT_NE(retclip::util::read_file(d / "train.log").find("probe at step 8: test macro AUROC"),
            std::string::npos);
  // A set without test rows is refused before the first step, naming the key to set.
  const fs::path bad = g_root / "probe-bad";
  const std::string no_test =
      " --set eval.probe.every_steps=4 --set eval.probe.level=eye"
      " --set eval.probe.ignore_split=true --set eval.probe.data=" +
      (g_root / "data" / "val.csv").string();
  EXPECT_EQ(run_status(train_cmd(bad, 10, no_test)), 2);
  EXPECT_FALSE(fs::exists(bad / "checkpoints" / retclip::test::checkpoint_name(4)));
  EXPECT_NE(retclip::util::read_file(g_root / "commands.log").find("eval.probe.test_fraction"),
            std::string::npos);
}

TEST_F(TrainE2E, InitFromCheckpointWithFrozenVisionKeepsVisionWeights) {
  // model.init.full from the reference run's final weights, vision tower frozen: after
  // more steps every visual.* tensor is still the reference's, the rest has moved.
  const fs::path r = g_root / "frozen";
  const fs::path init = g_root / "ref" / "checkpoints" / "step-00000012" / "model.safetensors";
  ASSERT_EQ(
      run_status(train_cmd(
          r, 4, "--set model.init.full=" + init.string() + " --set train.freeze.vision=true")),
      0);
  const std::string py = std::string(
      "python3 -c \"import sys; from safetensors.torch import "
      "load_file as L; a=L(sys.argv[1]); b=L(sys.argv[2]); "
      "v=[k for k in a if k.startswith('visual.')]; "
      "t=[k for k in a if k.startswith('bert.')]; "
      "sys.exit(0 if v and all((a[k]==b[k]).all() for k in v) and "
      "any((a[k]!=b[k]).any() for k in t) else 1)\" ");
  if (std::system("python3 -c 'import torch, safetensors' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with torch and safetensors is needed to compare the weights";
  const fs::path after =
      r / "checkpoints" / retclip::test::checkpoint_name(4) / "model.safetensors";
  EXPECT_EQ(run(py + init.string() + " " + after.string()), 0);
}

TEST_F(TrainE2E, NonFiniteStepsAreSkippedThenTrainingStops) {
  // An absurd learning rate drives the weights to inf: the steps after it are skipped
  // and counted, and training stops with a clear error after max_skipped_steps.
  const fs::path r = g_root / "nonfinite";
  EXPECT_EQ(run_status(train_cmd(r, 12,
                                 "--set optim.lr=1e30 --set optim.warmup_steps=0"
                                 " --set train.max_skipped_steps=3")),
            1);
  const std::string log = retclip::util::read_file(r / "train.log");
  EXPECT_NE(log.find("non-finite loss or gradient"), std::string::npos);
  EXPECT_NE(log.find("3 consecutive steps"), std::string::npos);

  // A run in which every step is skipped trained nothing: it must not report success.
  const fs::path all = g_root / "allskipped";
  ASSERT_EQ(run_status(train_cmd(all, 1, "--set optim.lr=1e30 --set optim.warmup_steps=0")), 0);
  EXPECT_EQ(run_status(train_cmd(all, 3,
                                 "--set optim.lr=1e30 --set optim.warmup_steps=0"
                                 " --set train.max_skipped_steps=10 --resume auto")),
            1);
  const std::string log2 = retclip::util::read_file(all / "train.log");
  EXPECT_NE(log2.find("nothing was trained"), std::string::npos) << log2;
}

TEST_F(TrainE2E, BadConfigIsRejectedBeforeTraining) {
  const fs::path r = g_root / "badcfg";
  EXPECT_EQ(run_status(train_cmd(r, 12, "--set optim.lr=-1")), 2);
  EXPECT_FALSE(fs::exists(r / "checkpoints"));
}

}  // namespace
