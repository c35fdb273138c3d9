// dist::launch: fork/exec of the local ranks, signal forwarding, failure handling.
#include "retclip/dist/launch.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/system.hpp"

namespace retclip::dist {
namespace {

std::atomic<int> g_forward{0};  // signal to forward to the ranks, 0 = none

void on_signal(int sig) { g_forward.store(sig); }

std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  RETCLIP_CHECK(n > 0, "launch: cannot read /proc/self/exe: ", std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool done = false;
  int status = 0;
};

}  // namespace

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("ended with wait status {}", status);
}

void validate(const LaunchOptions& o) {
  RETCLIP_CHECK_USAGE(o.nproc >= 1, "launch --nproc: expected >= 1 but got ", o.nproc);
  RETCLIP_CHECK_USAGE(o.nnodes >= 1, "launch --nnodes: expected >= 1 but got ", o.nnodes);
  RETCLIP_CHECK_USAGE(o.node_rank >= 0 && o.node_rank < o.nnodes,
                      "launch --node-rank: expected 0 <= node rank < nnodes (", o.nnodes,
                      ") but got ", o.node_rank);
  RETCLIP_CHECK_USAGE(o.master_port >= 1 && o.master_port <= 65535,
                      "launch --master-port: expected 1..65535 but got ", o.master_port);
  RETCLIP_CHECK_USAGE(o.grace_s >= 0, "launch --grace: expected >= 0 but got ", o.grace_s);
  RETCLIP_CHECK_USAGE(!o.args.empty(),
                      "launch: nothing to run. HINT: retclip launch --nproc 2 -- train --config X");
}

int launch(const LaunchOptions& o) {
  validate(o);
  const std::string program = o.program.empty() ? self_exe() : o.program;
  const int world = o.nproc * o.nnodes;
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  g_forward.store(0);

  std::vector<Child> kids;
  for (int local = 0; local < o.nproc; ++local) {
    const int rank = o.node_rank * o.nproc + local;
    pid_t pid = ::fork();
    RETCLIP_CHECK(pid >= 0, "launch: fork failed: ", std::strerror(errno));
    if (pid == 0) {
      // Own process group: a terminal's Ctrl-C reaches the launcher only, which
      // forwards it once. Die with the launcher.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      auto set = [](const char* k, const std::string& v) { ::setenv(k, v.c_str(), 1); };
      set("RANK", std::to_string(rank));
      set("WORLD_SIZE", std::to_string(world));
      set("LOCAL_RANK", std::to_string(local));
      set("LOCAL_WORLD_SIZE", std::to_string(o.nproc));
      set("GROUP_RANK", std::to_string(o.node_rank));
      set("NODE_RANK", std::to_string(o.node_rank));
      set("MASTER_ADDR", o.master_addr);
      set("MASTER_PORT", std::to_string(o.master_port));
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(program.c_str()));
      for (const auto& a : o.args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(program.c_str(), argv.data());
      std::fprintf(stderr, "retclip launch: cannot execute %s: %s\n", program.c_str(),
                   std::strerror(errno));
      ::_exit(127);
    }
    kids.push_back({rank, pid});
  }
  log::info("launch: {} rank(s) on node {}/{} (world {}), rendezvous {}:{}", o.nproc, o.node_rank,
            o.nnodes, world, o.master_addr, o.master_port);
  const int64_t cores = util::available_cores();
  if (o.nproc > cores)
    log::warn("launch: {} ranks on {} cores: the ranks oversubscribe the CPU and each step "
              "waits on the slowest. HINT: --nproc {} or fewer on this node",
              o.nproc, cores, cores);
  else if (o.nproc > 1)
    log::info("launch: each rank uses {} of the {} cores for its threads (train.threads 0; set "
              "train.threads to choose)",
              std::max<int64_t>(1, cores / o.nproc), cores);

  auto signal_all = [&](int sig) {
    for (const auto& c : kids)
      if (!c.done) ::kill(c.pid, sig);
  };
  int failed = -1;  // index of the first failing child
  std::chrono::steady_clock::time_point kill_at{};
  bool killed = false;
  size_t running = kids.size();
  while (running > 0) {
    if (int sig = g_forward.exchange(0)) {
      log::info("launch: forwarding signal {} to the ranks", sig);
      signal_all(sig);
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (size_t i = 0; i < kids.size(); ++i) {
        if (kids[i].pid != pid) continue;
        kids[i].done = true;
        kids[i].status = status;
        --running;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && failed < 0) {
          failed = static_cast<int>(i);
          log::error("launch: rank {} (pid {}) {}; stopping the other ranks", kids[i].rank, pid,
                     describe_wait_status(status));
          signal_all(SIGTERM);
          kill_at = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
        }
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;  // no children left
    if (failed >= 0 && !killed && std::chrono::steady_clock::now() >= kill_at) {
      log::warn("launch: ranks still running {:g} s after SIGTERM: sending SIGKILL", o.grace_s);
      signal_all(SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (failed < 0) return 0;
  const Child& f = kids[static_cast<size_t>(failed)];
  log::error("launch: failed: rank {} {}", f.rank, describe_wait_status(f.status));
  if (WIFEXITED(f.status)) return WEXITSTATUS(f.status);
  return 128 + WTERMSIG(f.status);
}

}  // namespace retclip::dist
