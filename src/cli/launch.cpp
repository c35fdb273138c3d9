// `retclip launch`: start the ranks of a distributed run on this node (torchrun-like).
#include "command.hpp"
#include "retclip/dist/launch.hpp"

namespace {

retclip::cli::RunFn add_launch(CLI::App& app) {
  auto o = std::make_shared<retclip::dist::LaunchOptions>();
  auto* sub = app.add_subcommand(
      "launch", "Start distributed ranks on this node: launch --nproc N -- train --config X");
  sub->add_option("--nproc,--nproc-per-node", o->nproc, "ranks on this node")->required();
  sub->add_option("--nnodes", o->nnodes, "nodes in the job (default 1)");
  sub->add_option("--node-rank", o->node_rank, "this node's index, 0-based (default 0)");
  sub->add_option("--master-addr", o->master_addr, "host of rank 0 (default 127.0.0.1)");
  sub->add_option("--master-port", o->master_port, "rendezvous port (default 29500)");
  sub->add_option("--grace", o->grace_s,
                  "seconds between SIGTERM and SIGKILL when a rank fails (default 30)");
  sub->add_option("command", o->args, "retclip subcommand and its arguments, after --")
      ->required();
  return [o] { return retclip::dist::launch(*o); };
}

}  // namespace

RETCLIP_COMMAND(launch, add_launch);
