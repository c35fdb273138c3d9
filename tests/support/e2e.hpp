// Shared pieces of the end-to-end tests that drive the retclip binary: running a
// command with its output appended to a log, and a small synthetic data set
// (synth -> sentencepiece tokenizer -> 32 px shards).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace retclip::test {

inline const std::string& retclip_bin() {
  static const std::string bin = std::string(RETCLIP_BINARY_DIR) + "/src/cli/retclip";
  return bin;
}

/// Runs `env cmd` through /bin/sh with stdout and stderr appended to `log`; returns the
/// exit status, where death by a signal reads 128 + signal.
inline int run_logged(const std::string& cmd, const std::filesystem::path& log,
                      const std::string& env = "") {
  std::string full = env + " " + cmd + " >> " + log.string() + " 2>&1";
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/// Writes data/{shards-train,shards-val,tok.model} under `root` (96 + 32 patients);
/// returns the first failing command's status, 0 when all succeeded.
inline int make_synthetic_shards(const std::filesystem::path& root,
                                 const std::filesystem::path& log) {
  const std::filesystem::path d = root / "data";
  const std::string& bin = retclip_bin();
  if (int rc = run_logged(bin + " synth --out " + d.string() +
                              " --patients 96 --val 32 --seed 3 --size 48", log))
    return rc;
  if (int rc = run_logged(bin + " tokenizer train --manifest " + (d / "train.csv").string() +
                              " --vocab-size 160 --out " + (d / "tok.model").string(), log))
    return rc;
  for (std::string split : {"train", "val"})
    if (int rc = run_logged(bin + " pack --manifest " + (d / (split + ".csv")).string() +
                                " --out " + (d / ("shards-" + split)).string() +
                                " --size 32 --tokenizer " + (d / "tok.model").string() +
                                " --tokenizer-type sentencepiece --context 32", log))
      return rc;
  return 0;
}

}  // namespace retclip::test
