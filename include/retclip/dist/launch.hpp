// The local launcher behind `retclip launch`: starts nproc ranks of a program on this
// node with the environment torchrun would give them, forwards SIGINT/SIGTERM, and when
// a rank fails ends the others (SIGTERM, then SIGKILL after `grace_s`) and reports
// which rank failed and how.
//
//   dist::LaunchOptions o;
//   o.nproc = 2; o.program = "/usr/bin/retclip"; o.args = {"train", "--config", "x.yaml"};
//   int rc = dist::launch(o);   // 0 when every rank exited 0
#pragma once

#include <string>
#include <vector>

namespace retclip::dist {

struct LaunchOptions {
  int nproc = 1;     ///< ranks on this node
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double grace_s = 30;  ///< after a failure: seconds between SIGTERM and SIGKILL
  std::string program;  ///< executable; empty = this executable (/proc/self/exe)
  std::vector<std::string> args;  ///< arguments after the program name
};

/// Checks the options; throws UsageError naming the bad one.
void validate(const LaunchOptions& o);

/// Runs the ranks to completion. Returns 0 when all exit 0; otherwise the failing
/// rank's exit code (128 + signal when it was killed), with an error line naming it.
int launch(const LaunchOptions& o);

/// "exited with status 3" / "was killed by signal 9 (Killed)" for a waitpid status.
std::string describe_wait_status(int status);

}  // namespace retclip::dist
