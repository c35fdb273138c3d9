// spdlog-backed implementation of retclip::log.
#include "retclip/util/log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace retclip::log {
namespace {

std::mutex g_mu;
std::shared_ptr<spdlog::logger> g_logger;
std::shared_ptr<spdlog::logger> g_file_logger;  // the file sink alone (null without a file)

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make_logger(const Options& o) {
  std::vector<spdlog::sink_ptr> sinks;
  std::string prefix = o.world > 1 ? fmt::format("[rank {}] ", o.rank) : "";
  if (o.console && o.rank == 0) {
    auto s = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    s->set_pattern(prefix + "[%H:%M:%S] %^%l%$: %v");
    sinks.push_back(s);
  }
  if (!o.file.empty()) {
    auto s = std::make_shared<spdlog::sinks::basic_file_sink_mt>(o.file, /*truncate=*/false);
    s->set_pattern(prefix + "[%Y-%m-%d %H:%M:%S.%e] %l: %v");
    sinks.push_back(s);
    g_file_logger = std::make_shared<spdlog::logger>("retclip-file", s);
    g_file_logger->set_level(spdlog::level::trace);
    g_file_logger->flush_on(spdlog::level::info);
  } else {
    g_file_logger.reset();
  }
  auto lg = std::make_shared<spdlog::logger>("retclip", sinks.begin(), sinks.end());
  lg->set_level(to_spd(o.level));
  lg->flush_on(spdlog::level::info);
  return lg;
}

spdlog::logger& logger() {
  if (!g_logger) g_logger = make_logger(Options{});
  return *g_logger;
}

}  // namespace

void init(const Options& opts) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_logger) g_logger->flush();
  g_logger = make_logger(opts);
}

void shutdown() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_logger) g_logger->flush();
  g_logger = make_logger(Options{});
}

void set_level(Level level) {
  std::lock_guard<std::mutex> lock(g_mu);
  logger().set_level(to_spd(level));
}

void write(Level level, const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_mu);
  logger().log(to_spd(level), msg);
}

void write_file_only(Level level, const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_file_logger) g_file_logger->log(to_spd(level), msg);
}

}  // namespace retclip::log
