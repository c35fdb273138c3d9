// Shared pieces of the interop oracle and e2e tests (tests/io/interop_*_test.cpp): the
// Python-availability rule (skip, or fail once scripts/setup.sh has run), the cached
// MiniLM fixture of tests/python/interop_oracle.py, a character WordPiece vocabulary.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "e2e.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::test {

namespace fs = std::filesystem;
using io::find_tensor;
using io::StateDict;

inline const std::string kScript = RETCLIP_SOURCE_DIR "/tests/python/interop_oracle.py";
// scripts/setup.sh writes this once the Python oracles are installed: from then on a
// missing package is an error, not a reason to skip.
inline const fs::path kSetupStamp = fs::path(RETCLIP_SOURCE_DIR) / ".deps" / "python-oracles.txt";
inline constexpr double kTol = 1e-5;

// Empty when python3 imports every module of `modules` (comma-separated).
inline std::string python_lacks(const std::string& modules) {
  const std::string cmd = "python3 -c 'import " + modules + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0 ? "" : "python3 cannot import " + modules;
}

#define REQUIRE_PYTHON(modules)                                                        \
  do {                                                                                 \
    const std::string why_ = python_lacks(modules);                                    \
    if (!why_.empty()) {                                                               \
      if (fs::exists(kSetupStamp))                                                     \
        FAIL() << why_ << ", although scripts/setup.sh installed the Python oracles (" \
               << kSetupStamp.string() << "); rerun scripts/setup.sh";                 \
      GTEST_SKIP() << why_ << " (scripts/setup.sh installs it)";                       \
    }                                                                                  \
  } while (0)

inline int run(const std::string& cmd, const fs::path& log) {
  return test::run_logged(cmd, log);
}

// Files an oracle script makes once per version of `sources` and every test process
// shares: `python3 <command> <dir>` fills <build>/<name>_<crc of sources>/. Returns the
// folder, or {} with `error` set when the script fails.
inline fs::path oracle_fixture(const std::string& name, const std::string& command,
                               const std::vector<std::string>& sources, std::string* error) {
  std::string text;
  for (const auto& s : sources) text += util::read_file(s);
  const fs::path dir =
      fs::path(RETCLIP_BINARY_DIR) / (name + "_" + util::hex32(util::crc32(text)));
  if (fs::exists(dir / "DONE")) return dir;
  fs::path tmp = dir;
  tmp += ".tmp-" + std::to_string(::getpid());
  util::remove_tree(tmp);
  const fs::path log = tmp.string() + ".log";
  if (run("python3 " + command + " " + tmp.string(), log) != 0) {
    *error = "oracle script failed; see " + log.string();
    return {};
  }
  util::write_file_atomic(tmp / "DONE", "ok");
  std::error_code ec;
  fs::rename(tmp, dir, ec);  // another test process may have won the race: use its copy
  if (ec) util::remove_tree(tmp);
  fs::remove(log, ec);
  return dir;
}

// The oracle's MiniLM files: <build>/interop_minilm_<crc>/{minilm.json, minilm_cls.safetensors}.
inline fs::path minilm_fixture(std::string* error) {
  return oracle_fixture("interop_minilm", kScript + " minilm",
                        {kScript, RETCLIP_SOURCE_DIR "/tests/python/tok_oracle.py"}, error);
}

// A character-level WordPiece vocabulary covering the synthetic English reports.
inline void write_char_vocab(const fs::path& path) {
  std::string v = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  const std::string chars = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (char c : chars) v += std::string(1, c) + "\n";
  for (char c : chars) v += std::string("##") + c + "\n";
  for (char c : std::string("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")) v += std::string(1, c) + "\n";
  util::write_file_atomic(path, v);
}

inline fs::path make_root(const std::string& name) {
  const fs::path root =
      fs::temp_directory_path() / ("retclip-interop-" + name + "-" + std::to_string(getpid()));
  util::remove_tree(root);
  fs::create_directories(root);
  return root;
}

inline void expect_bitwise(const StateDict& got, const StateDict& want, const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  for (const auto& [k, v] : want) {
    const at::Tensor* g = find_tensor(got, k);
    ASSERT_NE(g, nullptr) << what << ": " << k;
    EXPECT_TRUE(g->sizes() == v.sizes() && at::equal(*g, v)) << what << ": " << k;
  }
  std::printf("%s: %zu tensors identical\n", what.c_str(), want.size());
}

}  // namespace retclip::test
