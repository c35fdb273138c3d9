// Logging wrapper: spdlog stays behind this header. Console output plus an
// optional log file; once distributed, every line carries a "[rank r]" prefix and
// only rank 0 writes to the console (every rank writes its own file).
//
//   retclip::log::init({.file = run_dir / "train.log", .rank = 0, .world = 1});
//   retclip::log::info("step {}: loss {:.4f}", step, loss);
#pragma once

#include <fmt/format.h>

#include <string>

namespace retclip::log {

enum class Level { kDebug, kInfo, kWarn, kError };

struct Options {
  std::string file;        ///< log file path; empty = console only
  int rank = 0;            ///< process rank (prefix shown when world > 1)
  int world = 1;           ///< world size
  bool console = true;     ///< write to stderr (forced off for rank != 0)
  Level level = Level::kInfo;
};

/// (Re)configures the sinks. Safe to call more than once.
void init(const Options& opts);
/// Flushes and drops the file sink.
void shutdown();
void set_level(Level level);
void write(Level level, const std::string& msg);
/// To the log file only (e.g. an error the caller is about to print on the console).
void write_file_only(Level level, const std::string& msg);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kWarn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace retclip::log
