// Distributed training end to end, 2 ranks on CPU (Gloo over loopback):
//   - 2 ranks x batch 8 (through `retclip launch`) equal 1 rank x batch 16: the same
//     loss at every step and the same weights, within 1e-5; also with accumulation and
//     activation checkpointing;
//   - the same with loss.local_loss, started as torchrun would (RANK, WORLD_SIZE, ...
//     set by hand, no launcher);
//   - a 2-rank checkpoint resumes with 1 rank, and a 1-rank checkpoint with 2, at the
//     same global sample position and to the same weights;
//   - a rank killed mid-run makes the launcher stop the others and fail naming it.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "../support/e2e.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path g_root;
int g_port = 0;

int run(const std::string& cmd, const std::string& env = "") {
  return retclip::test::run_logged(cmd, g_root / "commands.log", env);
}

// A short run of the micro presets: 6 steps, checkpoints at 3 and 6, no dropout.
std::string train_args(const fs::path& run_dir, int batch, const std::string& extra = "") {
  const fs::path d = g_root / "data";
  std::ostringstream c;
  c << "train --config " << RETCLIP_SOURCE_DIR << "/configs/tiny-cpu.yaml"
    << " --set model.vision.preset=vit-micro --set model.text.preset=bert-micro"
    << " --set model.embed_dim=0 --set data.image_size=32 --set data.context_length=32"
    << " --set data.train=" << (d / "shards-train").string()
    << " --set data.val=" << (d / "shards-val").string()
    << " --set data.tokenizer.path=" << (d / "tok.model").string()
    << " --set train.batch_size=" << batch << " --set train.steps=6"
    << " --set train.threads=1 --set data.workers=1 --set train.deterministic=true"
    << " --set train.val_every=0 --set optim.warmup_steps=2 --set checkpoint.every_steps=3"
    << " --set checkpoint.keep_last=10 --set dist.timeout_s=60 --set data.format=auto"
    << " --set log.interval=1 --set log.dir=" << run_dir.string() << " " << extra;
  return c.str();
}

std::string launch(int nproc, const std::string& args, const std::string& extra = "") {
  return "exec " + retclip::test::retclip_bin() + " launch --nproc " + std::to_string(nproc) +
         " --master-port " + std::to_string(g_port++) + " " + extra + " -- " + args;
}

std::string single(const std::string& args) {
  return "exec " + retclip::test::retclip_bin() + " " + args;
}

std::map<int64_t, double> step_losses(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::map<int64_t, double> by_step;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j.contains("train/loss")) by_step[j["step"].get<int64_t>()] = j["train/loss"].get<double>();
  }
  return by_step;
}

fs::path checkpoint(const fs::path& run_dir, int step) {
  return run_dir / "checkpoints" / retclip::test::checkpoint_name(step);
}

// Largest |a - b| over all tensors of two checkpoints' model weights.
double max_weight_diff(const fs::path& a, const fs::path& b) {
  auto wa = retclip::io::load_weights(a / "model.safetensors");
  auto wb = retclip::io::load_weights(b / "model.safetensors");
  EXPECT_EQ(wa.size(), wb.size());
  std::map<std::string, at::Tensor> mb(wb.begin(), wb.end());
  double worst = 0;
  for (const auto& [k, t] : wa) {
    auto it = mb.find(k);
    if (it == mb.end()) {
      ADD_FAILURE() << "missing " << k;
      return 1e9;
    }
    worst = std::max(worst, (t - it->second).abs().max().item<double>());
  }
  return worst;
}

void expect_same_run(const fs::path& run, const fs::path& ref, int from_step = 1) {
  auto a = step_losses(run), b = step_losses(ref);
  for (int s = from_step; s <= 6; ++s) {
    ASSERT_TRUE(a.count(s) && b.count(s)) << "step " << s << " missing in " << run;
    EXPECT_NEAR(a[s], b[s], 1e-5) << "loss at step " << s << " of " << run;
  }
  const double d = max_weight_diff(checkpoint(run, 6), checkpoint(ref, 6));
  EXPECT_LE(d, 1e-5) << run << " vs " << ref;
  std::printf("[ dist ] %s: max |weight diff| vs %s = %.3g\n", run.filename().c_str(),
              ref.filename().c_str(), d);
}

class DistE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_root = retclip::test::fresh_dir("retclip-dist-e2e");
    g_port = 21000 + (getpid() % 500) * 40;
    ASSERT_EQ(retclip::test::make_synthetic_shards(g_root, g_root / "commands.log"), 0);
    // The reference: one process, the global batch of 16.
    ASSERT_EQ(run(single(train_args(g_root / "ref", 16))), 0);
  }
  static void TearDownTestSuite() {
    if (!::testing::Test::HasFailure()) retclip::util::remove_tree(g_root);
  }
};

TEST_F(DistE2E, TwoRanksEqualOneRankWithTheGlobalBatch) {
  const fs::path r = g_root / "two";
  ASSERT_EQ(run(launch(2, train_args(r, 8))), 0);
  expect_same_run(r, g_root / "ref");
  // Rank 0 logs for the run, rank 1 to its own file; the checkpoint has both RNG states.
  EXPECT_TRUE(fs::exists(r / "train.rank1.log"));
  EXPECT_TRUE(fs::exists(checkpoint(r, 6) / "rng_cpu.rank1.bin"));
  json t = json::parse(retclip::util::read_file(checkpoint(r, 6) / "trainer.json"));
  EXPECT_EQ(t["world_size"], 2);
}

TEST_F(DistE2E, AccumulationAndActivationCheckpointingToo) {
  // Gradients are synchronised once, after the last micro-batch, and the recomputed
  // blocks' parameters still reach the bucket hooks.
  const std::string extra = "--set optim.accum_steps=2 --set train.grad_checkpointing=true";
  const fs::path one = g_root / "accum-one", two = g_root / "accum-two";
  ASSERT_EQ(run(single(train_args(one, 16, extra))), 0);
  ASSERT_EQ(run(launch(2, train_args(two, 8, extra))), 0);
  expect_same_run(two, one);
}

TEST_F(DistE2E, LocalLossWithTorchrunEnvironmentWithoutLauncher) {
  const fs::path r = g_root / "local";
  const int port = g_port++;
  const std::string args =
      retclip::test::retclip_bin() + " " + train_args(r, 8, "--set loss.local_loss=true");
  auto env = [&](int rank) {
    return "RANK=" + std::to_string(rank) + " WORLD_SIZE=2 LOCAL_RANK=" + std::to_string(rank) +
           " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port);
  };
  // Rank 1 in the background, rank 0 here; both must succeed.
  const fs::path rc1 = g_root / "local-rank1.rc";
  ASSERT_EQ(run("(" + env(1) + " " + args + "; echo $? > " + rc1.string() + ") &"), 0);
  EXPECT_EQ(run(args, env(0)), 0);
  for (int i = 0; i < 600 && !fs::exists(rc1); ++i) usleep(100000);
  usleep(200000);
  ASSERT_TRUE(fs::exists(rc1));
  EXPECT_EQ(std::stoi(retclip::util::read_file(rc1)), 0);
  expect_same_run(r, g_root / "ref");
}

TEST_F(DistE2E, TwoRankCheckpointResumesWithOneRank) {
  const fs::path two = g_root / "two-for-resume", r = g_root / "two-then-one";
  ASSERT_EQ(run(launch(2, train_args(two, 8))), 0);
  ASSERT_EQ(run(single(train_args(r, 16, "--resume " + checkpoint(two, 3).string()))), 0);
  json t = json::parse(retclip::util::read_file(checkpoint(r, 6) / "trainer.json"));
  EXPECT_EQ(t["data"], json::parse(retclip::util::read_file(checkpoint(g_root / "ref", 6) /
                                                           "trainer.json"))["data"]);
  expect_same_run(r, g_root / "ref", 4);
}

TEST_F(DistE2E, OneRankCheckpointResumesWithTwoRanks) {
  const fs::path r = g_root / "one-then-two";
  ASSERT_EQ(run(launch(2, train_args(r, 8, "--resume " + checkpoint(g_root / "ref", 3).string()))),
            0);
  expect_same_run(r, g_root / "ref", 4);
}

TEST_F(DistE2E, KilledRankStopsTheOthersAndIsNamed) {
  const fs::path r = g_root / "killed";
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = run(launch(2, train_args(r, 8), "--grace 5"),
                     "RETCLIP_FAULT_KILL_AFTER_STEP=2 RETCLIP_FAULT_RANK=1");
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(rc, 0);
  EXPECT_LT(took, 60.0) << "the launcher took too long to stop the other rank";
  const std::string out = retclip::util::read_file(g_root / "commands.log");
  EXPECT_NE(out.find("launch: rank 1"), std::string::npos);
  EXPECT_NE(out.find("killed by signal 9"), std::string::npos);
  EXPECT_FALSE(fs::exists(checkpoint(r, 6)));
}

TEST_F(DistE2E, SigintToLauncherStopsEveryRankAtOneCheckpoint) {
  const fs::path r = g_root / "sigint";
  std::string cmd = launch(2, train_args(r, 8, "--set train.steps=400")) + " >> " +
                    (g_root / "commands.log").string() + " 2>&1";
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait for a few steps, then interrupt the launcher only.
  for (int i = 0; i < 600 && step_losses(r).size() < 3; ++i) usleep(100000);
  ASSERT_GE(step_losses(r).size(), 3u);
  kill(pid, SIGINT);
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  // Both ranks stopped at the same step and wrote one complete checkpoint there.
  const int64_t last = step_losses(r).rbegin()->first;
  EXPECT_LT(last, 400);
  EXPECT_TRUE(fs::exists(checkpoint(r, static_cast<int>(last)) / "COMPLETE"));
  EXPECT_TRUE(fs::exists(checkpoint(r, static_cast<int>(last)) / "rng_cpu.rank1.bin"));
  const std::string log1 = retclip::util::read_file(r / "train.rank1.log");
  EXPECT_NE(log1.find("stop requested"), std::string::npos);
}

}  // namespace
