// Where this process sits in a distributed run, read from the environment that
// torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) or, failing that, from SLURM's (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, SLURM_NTASKS_PER_NODE / SLURM_TASKS_PER_NODE, SLURM_JOB_NODELIST).
// Neither present, or WORLD_SIZE=1: a single process.
//
//   dist::Env env = dist::Env::from_environment();
//   if (env.distributed()) { auto comm = dist::Comm::init(env, device, options); ... }
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace retclip::dist {

struct Env {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";  ///< single | torchrun | slurm

  bool distributed() const { return world > 1; }
  std::string describe() const;

  /// Reads the process environment (see the header comment). Throws UsageError naming
  /// the variable when a value is malformed or out of range.
  static Env from_environment();
  /// Same, from a lookup function (for tests): returns nullptr for an unset variable.
  static Env from_lookup(const std::function<const char*(const char*)>& get);
};

/// Whether this build has the NCCL backend (dist.backend nccl; see comm.hpp).
bool nccl_available();

/// First host of a SLURM node list: "gpu[03-05,07],cpu1" -> "gpu03"; "node7" -> "node7".
std::string first_slurm_host(const std::string& nodelist);

/// Tasks on the first node from SLURM_TASKS_PER_NODE ("8(x2),4" -> 8).
int slurm_tasks_on_first_node(const std::string& tasks_per_node);

}  // namespace retclip::dist
