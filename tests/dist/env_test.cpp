// dist::Env from torchrun's and SLURM's variables; the launcher's status wording.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <map>
#include <string>

#include "retclip/dist/env.hpp"
#include "retclip/dist/launch.hpp"
#include "retclip/util/error.hpp"

namespace {

using retclip::dist::Env;

Env from(const std::map<std::string, std::string>& vars) {
  return Env::from_lookup([&](const char* k) -> const char* {
    auto it = vars.find(k);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(DistEnv, NothingSetIsOneProcess) {
  Env e = from({});
  EXPECT_FALSE(e.distributed());
  EXPECT_EQ(e.world, 1);
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.source, "single");
  EXPECT_EQ(e.describe(), "single process");
}

TEST(DistEnv, TorchrunVariables) {
  Env e = from({{"RANK", "5"}, {"WORLD_SIZE", "16"}, {"LOCAL_RANK", "1"},
                {"LOCAL_WORLD_SIZE", "8"}, {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29511"}});
  EXPECT_TRUE(e.distributed());
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world, 8);
  EXPECT_EQ(e.master_addr, "node0");
  EXPECT_EQ(e.master_port, 29511);
  EXPECT_EQ(e.source, "torchrun");
}

TEST(DistEnv, WorldSizeOneIsNotDistributed) {
  Env e = from({{"RANK", "0"}, {"WORLD_SIZE", "1"}});
  EXPECT_FALSE(e.distributed());
}

TEST(DistEnv, SlurmVariables) {
  Env e = from({{"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "1"},
                {"SLURM_TASKS_PER_NODE", "8(x2)"}, {"SLURM_JOB_NODELIST", "gpu[03-04],cpu1"}});
  EXPECT_EQ(e.source, "slurm");
  EXPECT_EQ(e.rank, 9);
  EXPECT_EQ(e.world, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world, 8);
  EXPECT_EQ(e.master_addr, "gpu03");
  EXPECT_EQ(e.master_port, 29500);
}

TEST(DistEnv, TorchrunWinsOverSlurm) {
  Env e = from({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "7"}, {"SLURM_NTASKS", "8"}});
  EXPECT_EQ(e.source, "torchrun");
  EXPECT_EQ(e.rank, 1);
}

TEST(DistEnv, BadValuesNameTheVariable) {
  auto msg = [](const std::map<std::string, std::string>& v) {
    try {
      from(v);
    } catch (const retclip::UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("RANK"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "x"}, {"WORLD_SIZE", "2"}}).find("expected an integer"),
            std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}}).find("WORLD_SIZE"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}).find("MASTER_PORT"),
            std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"LOCAL_WORLD_SIZE", "2"}}).find("MASTER_ADDR"),
            std::string::npos);
}

TEST(DistEnv, SlurmHelpers) {
  EXPECT_EQ(retclip::dist::first_slurm_host("node7"), "node7");
  EXPECT_EQ(retclip::dist::first_slurm_host("a1,b2"), "a1");
  EXPECT_EQ(retclip::dist::first_slurm_host("gpu[12,15-16]"), "gpu12");
  EXPECT_EQ(retclip::dist::slurm_tasks_on_first_node("4"), 4);
  EXPECT_EQ(retclip::dist::slurm_tasks_on_first_node("8(x3),2"), 8);
  EXPECT_THROW(retclip::dist::slurm_tasks_on_first_node("x"), retclip::UsageError);
}

TEST(DistLaunch, StatusWordingAndValidation) {
  EXPECT_EQ(retclip::dist::describe_wait_status(3 << 8), "exited with status 3");
  EXPECT_NE(retclip::dist::describe_wait_status(SIGKILL).find("killed by signal 9"),
            std::string::npos);
  retclip::dist::LaunchOptions o;
  o.args = {"train"};
  o.nproc = 0;
  EXPECT_THROW(retclip::dist::validate(o), retclip::UsageError);
  o.nproc = 2;
  o.node_rank = 1;
  EXPECT_THROW(retclip::dist::validate(o), retclip::UsageError);
  o.node_rank = 0;
  o.args.clear();
  EXPECT_THROW(retclip::dist::validate(o), retclip::UsageError);
}

}  // namespace
