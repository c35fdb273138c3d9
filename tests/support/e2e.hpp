// Shared pieces of the tests: a fresh temporary directory per test, checkpoint
// directory names, running a command with its output appended to a log, and a small
// synthetic data set (synth -> sentencepiece tokenizer -> 32 px shards) for the tests
// that drive the retclip binary.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace retclip::test {

/// <tmp>/<suite>-<pid>/<name>, emptied and created (one per test, several processes safe).
inline std::filesystem::path fresh_dir(const std::string& suite, const std::string& name = "") {
  namespace fs = std::filesystem;
  fs::path d = fs::temp_directory_path() / (suite + "-" + std::to_string(::getpid()));
  if (!name.empty()) d /= name;
  std::error_code ec;
  fs::remove_all(d, ec);
  fs::create_directories(d);
  return d;
}

/// The directory name of checkpoint `step`: step-00000012.
inline std::string checkpoint_name(int64_t step) {
  std::string digits = std::to_string(step);
  return "step-" + std::string(digits.size() < 8 ? 8 - digits.size() : 0, '0') + digits;
}

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
  if (int rc = run_logged(
          bin + " synth --out " + d.string() + " --patients 96 --val 32 --seed 3 --size 48", log))
    return rc;
  if (int rc = run_logged(bin + " tokenizer train --manifest " + (d / "train.csv").string() +
                              " --vocab-size 160 --out " + (d / "tok.model").string(),
                          log))
    return rc;
  for (std::string split : {"train", "val"})
    if (int rc = run_logged(bin + " pack --manifest " + (d / (split + ".csv")).string() +
                                " --out " + (d / ("shards-" + split)).string() +
                                " --size 32 --tokenizer " + (d / "tok.model").string() +
                                " --tokenizer-type sentencepiece --context 32",
                            log))
      return rc;
  return 0;
}

}  // namespace retclip::test
