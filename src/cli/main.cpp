// The `retclip` executable: parses the command line, runs one subcommand and maps
// errors to exit codes (0 success, 1 runtime failure, 2 usage or config error).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <map>

#include "command.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/system.hpp"
#include "retclip/version.hpp"

namespace retclip::cli {
std::vector<CommandEntry>& command_registry() {
  static std::vector<CommandEntry> reg;
  return reg;
}
}  // namespace retclip::cli

namespace {
// "[rank r] " inside a distributed run (several ranks share one terminal), else "".
std::string rank_prefix() {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (!rank || !world || std::string(world) == "1") return "";
  return std::string("[rank ") + rank + "] ";
}
}  // namespace

int main(int argc, char** argv) {
  using namespace retclip;
  // Before anything else: OpenMP's wait settings only take effect in a fresh image.
  util::reexec_with_openmp_defaults(argv);
  CLI::App app{"retclip: CLIP-style pretraining of retinal foundation models (RET-CLIP)"};
  app.set_version_flag("--version", std::string("retclip ") + kVersion + " (" + kGitHash + ")");
  app.require_subcommand(1);
  auto& reg = cli::command_registry();
  std::sort(reg.begin(), reg.end(),
            [](const auto& a, const auto& b) { return std::string(a.name) < b.name; });
  std::map<CLI::App*, cli::RunFn> runs;
  for (const auto& e : reg) {
    size_t before = app.get_subcommands({}).size();
    cli::RunFn fn = e.add(app);
    auto subs = app.get_subcommands({});
    if (subs.size() > before) runs[subs.back()] = std::move(fn);
  }
  // An unknown first word: say which, and what exists (CLI11 would only say that a
  // subcommand is required).
  if (argc > 1 && argv[1][0] != '-' &&
      std::none_of(reg.begin(), reg.end(), [&](const auto& e) { return e.name == std::string(argv[1]); })) {
    std::string names;
    for (const auto& e : reg) names += std::string(names.empty() ? "" : ", ") + e.name;
    std::fprintf(stderr, "retclip: unknown command '%s'; commands: %s (see --help)\n", argv[1],
                 names.c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e) == 0 ? 0 : 2;
    // `launch` passes everything after `--` to the ranks; without it, the subcommand's
    // own options look like launch's and CLI11 only says they were not expected.
    const bool launch = argc > 1 && std::string(argv[1]) == "launch";
    if (code != 0 && launch &&
        std::none_of(argv + 1, argv + argc, [](const char* a) { return std::string(a) == "--"; }))
      std::fprintf(stderr,
                   "retclip: HINT: put the command the ranks run after `--`, e.g. retclip launch "
                   "--nproc 2 -- train --config configs/tiny-cpu.yaml\n");
    return code;
  }
  try {
    for (auto* sub : app.get_subcommands()) {
      auto it = runs.find(sub);
      if (it != runs.end()) return it->second();
    }
    std::fprintf(stderr, "retclip: no subcommand given (see --help)\n");
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%sretclip: error: %s\n", rank_prefix().c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%sretclip: error: %s\n", rank_prefix().c_str(), e.what());
    return 1;
  }
}
