// metrics.jsonl writer (resume-consistent) and the fan-out sink.
#include "retclip/train/metrics.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::train {

double wall_time_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

namespace {

// Keeps the lines of `text` whose "step" is <= resume_step; stops at the first line
// that is not a complete JSON object with a step (a torn tail from a crash).
std::string keep_until(const std::string& text, int64_t resume_step, int64_t& dropped) {
  std::string kept;
  std::istringstream in(text);
  std::string line;
  bool torn = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (torn) {
      ++dropped;
      continue;
    }
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") ||
        !j["step"].is_number_integer()) {
      torn = true;
      ++dropped;
      continue;
    }
    if (j["step"].get<int64_t>() > resume_step) {
      ++dropped;
      continue;
    }
    kept += line;
    kept += '\n';
  }
  return kept;
}

}  // namespace

JsonlSink::JsonlSink(std::filesystem::path path, int64_t resume_step) : path_(std::move(path)) {
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
  if (resume_step < 0) {
    flags |= O_TRUNC;
  } else if (std::filesystem::exists(path_)) {
    std::string kept = keep_until(util::read_file(path_), resume_step, dropped_);
    if (dropped_ > 0) {
      util::write_file_atomic(path_, kept);
      log::info("{}: dropped {} lines after step {} (resuming from that step)", path_.string(),
                dropped_, resume_step);
    }
  }
  fd_ = ::open(path_.c_str(), flags, 0644);
  RETCLIP_CHECK(fd_ >= 0, "cannot open ", path_.string(), " for appending: ",
                std::strerror(errno), ". HINT: check that log.dir is writable");
}

JsonlSink::~JsonlSink() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonlSink::write(int64_t step, const std::map<std::string, double>& values,
                      double wall_time) {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["time"] = wall_time;
  for (const auto& [k, v] : values) {
    if (std::isfinite(v))
      j[k] = v;
    else
      j[k] = nullptr;
  }
  std::string line = j.dump() + "\n";
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    RETCLIP_CHECK(n >= 0, "cannot append to ", path_.string(), ": ", std::strerror(errno),
                  ". HINT: is the disk full?");
    off += static_cast<size_t>(n);
  }
}

void MultiSink::add(std::shared_ptr<MetricsSink> sink) {
  RETCLIP_CHECK(sink != nullptr, "MultiSink::add: expected a sink but got null");
  sinks_.push_back(std::move(sink));
}

void MultiSink::write(int64_t step, const std::map<std::string, double>& values,
                      double wall_time) {
  for (auto& s : sinks_) s->write(step, values, wall_time);
}

void MultiSink::flush() {
  for (auto& s : sinks_) s->flush();
}

}  // namespace retclip::train
