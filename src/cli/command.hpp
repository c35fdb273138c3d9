// Subcommand registry: each src/cli/<name>.cpp registers itself with
// RETCLIP_COMMAND(name, fn), where fn adds a CLI11 subcommand and returns the
// function that runs it (returning the exit code). main() owns parsing and exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace retclip::cli {

using RunFn = std::function<int()>;
using AddFn = RunFn (*)(CLI::App& app);

struct CommandEntry {
  const char* name;
  AddFn add;
};

std::vector<CommandEntry>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(const char* name, AddFn add) { command_registry().push_back({name, add}); }
};

/// --resume and --overwrite of the commands that train into log.dir (train, finetune).
inline void add_run_dir_options(CLI::App* sub, std::string& resume, bool& overwrite) {
  sub->add_option("--resume", resume,
                  "auto | auto-or-scratch | PATH (a checkpoint or checkpoints directory; "
                  "checkpoint.resume); auto-or-scratch starts fresh when no usable checkpoint "
                  "exists");
  sub->add_flag("--overwrite", overwrite,
                "start over in a log.dir that holds an earlier run (its checkpoints and "
                "metrics are removed)");
}

}  // namespace retclip::cli

#define RETCLIP_COMMAND(name, fn) \
  static ::retclip::cli::CommandRegistrar retclip_command_##name(#name, fn)
