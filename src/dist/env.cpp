// Env::from_environment: torchrun variables first, then SLURM's, else one process.
#include "retclip/dist/env.hpp"

#include <fmt/format.h>

#include <cstdlib>

#include "retclip/util/error.hpp"

namespace retclip::dist {
namespace {

int parse_int(const char* name, const char* value, int lo, int hi) {
  std::string s(value);
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  RETCLIP_CHECK_USAGE(used == s.size() && !s.empty(), "environment variable ", name,
                      ": expected an integer but got '", s, "'");
  RETCLIP_CHECK_USAGE(v >= lo && v <= hi, "environment variable ", name, ": expected a value in [",
                      lo, ", ", hi, "] but got ", v);
  return static_cast<int>(v);
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  // Up to the first ',' outside brackets; a bracket range keeps its first entry.
  std::string out;
  size_t i = 0;
  while (i < nodelist.size() && nodelist[i] != ',' && nodelist[i] != '[') out += nodelist[i++];
  if (i < nodelist.size() && nodelist[i] == '[') {
    ++i;
    while (i < nodelist.size() && nodelist[i] != '-' && nodelist[i] != ',' && nodelist[i] != ']')
      out += nodelist[i++];
  }
  return out;
}

int slurm_tasks_on_first_node(const std::string& tasks_per_node) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(tasks_per_node, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  RETCLIP_CHECK_USAGE(used > 0 && v > 0, "SLURM_TASKS_PER_NODE: expected a form like '8' or "
                      "'8(x2)' but got '", tasks_per_node, "'");
  return v;
}

std::string Env::describe() const {
  if (!distributed()) return "single process";
  return fmt::format("rank {}/{} (local {}/{}), rendezvous {}:{}, from {}", rank, world,
                     local_rank, local_world, master_addr, master_port, source);
}

Env Env::from_lookup(const std::function<const char*(const char*)>& get) {
  Env e;
  const int max_world = 1 << 20;
  if (get("WORLD_SIZE") || get("RANK")) {
    RETCLIP_CHECK_USAGE(get("WORLD_SIZE") && get("RANK"),
                        "environment: RANK and WORLD_SIZE must be set together (as torchrun "
                        "does); found only ", get("RANK") ? "RANK" : "WORLD_SIZE");
    e.source = "torchrun";
    e.world = parse_int("WORLD_SIZE", get("WORLD_SIZE"), 1, max_world);
    e.rank = parse_int("RANK", get("RANK"), 0, e.world - 1);
    e.local_rank = get("LOCAL_RANK") ? parse_int("LOCAL_RANK", get("LOCAL_RANK"), 0, e.world - 1)
                                     : e.rank;
    e.local_world = get("LOCAL_WORLD_SIZE")
                        ? parse_int("LOCAL_WORLD_SIZE", get("LOCAL_WORLD_SIZE"), 1, e.world)
                        : e.world;
    RETCLIP_CHECK_USAGE(e.local_rank < e.local_world, "environment: LOCAL_RANK ", e.local_rank,
                        " must be below LOCAL_WORLD_SIZE ", e.local_world);
    if (get("MASTER_ADDR")) e.master_addr = get("MASTER_ADDR");
    if (get("MASTER_PORT")) e.master_port = parse_int("MASTER_PORT", get("MASTER_PORT"), 1, 65535);
    RETCLIP_CHECK_USAGE(e.world == 1 || get("MASTER_ADDR") || e.local_world == e.world,
                        "environment: MASTER_ADDR is required when the ranks span several "
                        "nodes (WORLD_SIZE ", e.world, ", LOCAL_WORLD_SIZE ", e.local_world, ")");
  } else if (get("SLURM_PROCID") && get("SLURM_NTASKS")) {
    e.source = "slurm";
    e.world = parse_int("SLURM_NTASKS", get("SLURM_NTASKS"), 1, max_world);
    e.rank = parse_int("SLURM_PROCID", get("SLURM_PROCID"), 0, e.world - 1);
    e.local_rank = get("SLURM_LOCALID") ? parse_int("SLURM_LOCALID", get("SLURM_LOCALID"), 0,
                                                    e.world - 1)
                                        : 0;
    if (get("SLURM_NTASKS_PER_NODE"))
      e.local_world = parse_int("SLURM_NTASKS_PER_NODE", get("SLURM_NTASKS_PER_NODE"), 1, e.world);
    else if (get("SLURM_TASKS_PER_NODE"))
      e.local_world = slurm_tasks_on_first_node(get("SLURM_TASKS_PER_NODE"));
    else
      e.local_world = e.world;
    if (get("MASTER_ADDR"))
      e.master_addr = get("MASTER_ADDR");
    else if (get("SLURM_JOB_NODELIST"))
      e.master_addr = first_slurm_host(get("SLURM_JOB_NODELIST"));
    else if (get("SLURM_NODELIST"))
      e.master_addr = first_slurm_host(get("SLURM_NODELIST"));
    if (get("MASTER_PORT")) e.master_port = parse_int("MASTER_PORT", get("MASTER_PORT"), 1, 65535);
  }
  return e;
}

Env Env::from_environment() {
  return from_lookup([](const char* name) -> const char* {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
  });
}

}  // namespace retclip::dist
