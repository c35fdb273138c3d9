// Subcommand registry: each src/cli/<name>.cpp registers itself with
// RETCLIP_COMMAND(name, fn), where fn adds a CLI11 subcommand and returns the
// function that runs it (returning the exit code). main() owns parsing and exit codes.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
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

}  // namespace retclip::cli

#define RETCLIP_COMMAND(name, fn) \
  static ::retclip::cli::CommandRegistrar retclip_command_##name(#name, fn)
