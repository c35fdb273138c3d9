// dist::Comm, all_gather_with_grad and GradSync across real processes: each test starts
// two copies of this executable as ranks (torchrun's variables, Gloo over loopback) and
// runs the matching DistWorker test in them. A worker test skips when RANK is unset.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "retclip/config/config.hpp"
#include "retclip/dist/comm.hpp"
#include "retclip/dist/grad_sync.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/step.hpp"
#include "retclip/util/error.hpp"

namespace {

using retclip::dist::Comm;

constexpr int kWorld = 2;

// Runs DistWorker.<name> as `world` ranks; returns the ranks' exit statuses.
std::vector<int> run_ranks(const std::string& name, int world = kWorld) {
  static int serial = 0;
  const int port = 20000 + (getpid() * 7 + 13 * serial++) % 20000;
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::string filter = "--gtest_filter=DistWorker." + name;
      execl("/proc/self/exe", "comm_test", filter.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<int> status;
  for (pid_t p : pids) {
    int st = 0;
    waitpid(p, &st, 0);
    status.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
  return status;
}

std::shared_ptr<Comm> join() {
  auto env = retclip::dist::Env::from_environment();
  return Comm::init(env, at::kCPU, {"gloo", 60});
}

#define WORKER_OR_SKIP() \
  if (!std::getenv("RANK")) GTEST_SKIP() << "runs inside a rank (see DistRanks)"

// ---- the workers -------------------------------------------------------------------

TEST(DistWorker, Collectives) {
  WORKER_OR_SKIP();
  torch::set_num_threads(1);
  auto comm = join();
  const int r = comm->rank();
  ASSERT_EQ(comm->world(), kWorld);
  // Broadcast of several shapes and dtypes from rank 0.
  std::vector<at::Tensor> b{at::full({3}, float(r + 1)), at::full({2, 2}, double(r + 5)),
                            at::full({4}, int64_t(r + 9), at::kLong)};
  comm->broadcast_(b, 0);
  EXPECT_TRUE(b[0].equal(at::full({3}, 1.0f)));
  EXPECT_TRUE(b[1].equal(at::full({2, 2}, 5.0, at::kDouble)));
  EXPECT_TRUE(b[2].equal(at::full({4}, int64_t(9), at::kLong)));
  // All-reduce (sum) and all-gather in rank order.
  at::Tensor s = at::full({5}, float(r + 1));
  comm->all_reduce_(s);
  EXPECT_TRUE(s.equal(at::full({5}, 3.0f)));
  at::Tensor g = comm->all_gather(at::full({2, 3}, float(r)));
  ASSERT_EQ(g.sizes(), (at::IntArrayRef{4, 3}));
  EXPECT_TRUE(g.slice(0, 0, 2).eq(0).all().item<bool>());
  EXPECT_TRUE(g.slice(0, 2, 4).eq(1).all().item<bool>());
  comm->barrier();
  EXPECT_GT(comm->comm_seconds(), 0.0);
}

TEST(DistWorker, GatherWithGradReturnsThisRanksSummedGradient) {
  WORKER_OR_SKIP();
  torch::set_num_threads(1);
  auto comm = join();
  const int r = comm->rank();
  at::Tensor x = at::full({3, 4}, float(r + 1)).requires_grad_(true);
  at::Tensor all = retclip::dist::all_gather_with_grad(*comm, x);
  ASSERT_EQ(all.sizes(), (at::IntArrayRef{6, 4}));
  // Rank-dependent weights: the gradient of rank r's rows is the sum over ranks.
  at::Tensor w = at::arange(24, at::kFloat).view({6, 4}) * float(r + 1);
  (all * w).sum().backward();
  at::Tensor base = at::arange(24, at::kFloat).view({6, 4}).slice(0, 3 * r, 3 * r + 3);
  EXPECT_TRUE(x.grad().allclose(base * 3.0f)) << x.grad();  // (1 + 2) * base
}

TEST(DistWorker, GradSyncAveragesInBucketsWithAccumulationAndFrozen) {
  WORKER_OR_SKIP();
  torch::set_num_threads(1);
  auto comm = join();
  const float r = static_cast<float>(comm->rank());
  at::Tensor a = at::ones({5}).requires_grad_(true);
  at::Tensor b = at::ones({3, 3}).requires_grad_(true);
  at::Tensor frozen = at::ones({2});  // no gradient: left out
  at::Tensor unused = at::ones({4}).requires_grad_(true);  // no gradient this step
  // A tiny bucket size: one parameter per bucket, so several all-reduces overlap.
  // Buckets launch in reverse order of the list, so `unused` (never ready before
  // finish) comes first in the list and last in launch order.
  retclip::dist::GradSync sync(comm, {unused, a, b, frozen}, 1e-6);
  EXPECT_EQ(sync.bucket_count(), 3);
  // Two micro-batches: only the last backward is armed, after accumulation.
  sync.arm(false);
  ((a * (r + 1)).sum() + (b * 2 * (r + 1)).sum() + frozen.sum()).backward();
  sync.arm(true);
  ((a * (r + 1)).sum() + (b * 2 * (r + 1)).sum()).backward();
  EXPECT_GE(sync.launched_in_backward(), 1);
  sync.finish();
  // Per rank: a.grad = 2 (r+1), b.grad = 4 (r+1); averaged over r = 0, 1: 3 and 6.
  EXPECT_TRUE(a.grad().allclose(at::full({5}, 3.0f))) << a.grad();
  EXPECT_TRUE(b.grad().allclose(at::full({3, 3}, 6.0f))) << b.grad();
  EXPECT_TRUE(unused.grad().defined() && unused.grad().eq(0).all().item<bool>());
  // Disarmed: a further backward is not synchronised.
  a.mutable_grad().zero_();
  (a * (r + 1)).sum().backward();
  sync.finish();
  EXPECT_TRUE(a.grad().allclose(at::full({5}, r + 1)));
}

TEST(DistWorker, TrainingKeepsRanksIdentical) {
  WORKER_OR_SKIP();
  torch::set_num_threads(1);
  auto comm = join();
  const int r = comm->rank();
  retclip::config::ModelConfig mc;
  mc.vision.preset = "vit-micro";
  mc.text.preset = "bert-micro";
  torch::manual_seed(100 + r);  // different initial weights per rank on purpose
  retclip::model::RetClip net(retclip::model::retclip_options(mc, 50));
  std::vector<at::Tensor> state;
  for (const auto& p : net->parameters()) state.push_back(p.data());
  comm->broadcast_(state, 0);
  retclip::config::OptimConfig oc;
  auto built = retclip::train::build_adamw(*net, oc);
  retclip::dist::GradSync sync(comm, net->parameters(), 0.05);
  const retclip::train::StepComm sc{*comm, sync};
  auto opts = retclip::loss::TripartiteLossOptions().world_size(comm->world());
  for (int step = 0; step < 3; ++step) {
    torch::manual_seed(1000 * step + r);  // each rank its own data
    const int64_t B = 4, S = 32, T = 16;
    retclip::train::MicroBatch mb{at::randn({B, 3, S, S}), at::randn({B, 3, S, S}),
                                  at::randint(0, 50, {B, T}, at::kLong),
                                  at::tensor({1, 0, 1, 1}).to(at::kBool),
                                  at::tensor({1, 1, r == 0 ? 1 : 0, 1}).to(at::kBool)};
    built.optimizer->zero_grad(true);
    retclip::train::forward_backward(net, retclip::train::split_batch(mb, 2), opts,
                                     retclip::train::Precision::kFp32, 1.0, sc);
    built.optimizer->step();
  }
  std::vector<at::Tensor> flat;
  for (const auto& p : net->parameters()) flat.push_back(p.detach().reshape(-1));
  at::Tensor mine = at::cat(flat);
  at::Tensor all = comm->all_gather(mine.unsqueeze(0));
  EXPECT_TRUE(all[0].equal(all[1])) << "weights differ between ranks after 3 steps";
  EXPECT_FALSE(mine.isnan().any().item<bool>());
}

TEST(DistWorker, CollectiveTimeoutNamesRankAndCollective) {
  WORKER_OR_SKIP();
  auto env = retclip::dist::Env::from_environment();
  auto comm = Comm::init(env, at::kCPU, {"gloo", 2.0});
  if (comm->rank() == 1) {  // never joins the all-reduce
    std::this_thread::sleep_for(std::chrono::seconds(5));
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor t = at::ones({4});
  try {
    comm->all_reduce_(t);
    ADD_FAILURE() << "expected a timeout";
  } catch (const retclip::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 0/2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("all_reduce"), std::string::npos) << msg;
    EXPECT_NE(msg.find("dist.timeout_s 2"), std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 4.5);
}

// ---- the launcher side ---------------------------------------------------------------

class DistRanks : public ::testing::TestWithParam<std::string> {};

TEST_P(DistRanks, AllRanksPass) {
  if (std::getenv("RANK")) GTEST_SKIP() << "inside a rank";
  auto status = run_ranks(GetParam());
  for (size_t r = 0; r < status.size(); ++r) EXPECT_EQ(status[r], 0) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Gloo, DistRanks,
                         ::testing::Values("Collectives",
                                           "GatherWithGradReturnsThisRanksSummedGradient",
                                           "GradSyncAveragesInBucketsWithAccumulationAndFrozen",
                                           "TrainingKeepsRanksIdentical",
                                           "CollectiveTimeoutNamesRankAndCollective"));

TEST(DistTimeout, MissingPeerNamesRankAndRendezvous) {
  if (std::getenv("RANK")) GTEST_SKIP() << "inside a rank";
  // Only rank 1 of 2 shows up: the rendezvous times out with a clear error.
  setenv("RANK", "1", 1);
  setenv("WORLD_SIZE", "2", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", std::to_string(40000 + getpid() % 20000).c_str(), 1);
  auto env = retclip::dist::Env::from_environment();
  unsetenv("RANK");
  unsetenv("WORLD_SIZE");
  unsetenv("MASTER_ADDR");
  unsetenv("MASTER_PORT");
  const auto t0 = std::chrono::steady_clock::now();
  try {
    Comm::init(env, at::kCPU, {"gloo", 2.0});
    FAIL() << "expected a rendezvous error";
  } catch (const retclip::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rendezvous at 127.0.0.1"), std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
}

}  // namespace
