// Progress reporting: on a terminal a one-line bar redrawn in place with rate and
// ETA; otherwise (CI, log files) plain lines at most every `interval_s` seconds.
//
//   util::Progress bar("pack", total, "patients");
//   for (...) { ...; bar.advance(1); }
//   bar.finish();
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace retclip::util {

/// Formats seconds as "1h02m", "3m05s" or "12s".
std::string format_duration(double seconds);

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit, double interval_s = 10.0);
  /// Adds `n` done items; `extra` is appended to the line (e.g. "loss 1.23").
  void advance(int64_t n = 1, const std::string& extra = "");
  void finish(const std::string& extra = "");
  /// Items per second since start.
  double rate() const;
  /// Seconds left at the current rate (0 when unknown).
  double eta_s() const;
  int64_t done() const { return done_; }

 private:
  void draw(const std::string& extra, bool final_line);

  std::string label_, unit_;
  int64_t total_, done_ = 0;
  double interval_s_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace retclip::util
