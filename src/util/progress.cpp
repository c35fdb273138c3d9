// Terminal progress bar / periodic progress lines.
#include "retclip/util/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

#include "retclip/util/log.hpp"

namespace retclip::util {

std::string format_duration(double s) {
  if (s < 0) s = 0;
  auto total = static_cast<int64_t>(s + 0.5);
  if (total >= 3600) return fmt::format("{}h{:02d}m", total / 3600, (total % 3600) / 60);
  if (total >= 60) return fmt::format("{}m{:02d}s", total / 60, total % 60);
  return fmt::format("{}s", total);
}

Progress::Progress(std::string label, int64_t total, std::string unit, double interval_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      interval_s_(interval_s),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

double Progress::rate() const {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return el > 0 ? static_cast<double>(done_) / el : 0.0;
}

double Progress::eta_s() const {
  double r = rate();
  return (r > 0 && total_ > done_) ? static_cast<double>(total_ - done_) / r : 0.0;
}

void Progress::advance(int64_t n, const std::string& extra) {
  done_ += n;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if ((tty_ && since >= 0.2) || (!tty_ && since >= interval_s_)) {
    last_draw_ = now;
    draw(extra, false);
  }
}

void Progress::finish(const std::string& extra) { draw(extra, true); }

void Progress::draw(const std::string& extra, bool final_line) {
  double pct = total_ > 0 ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 0;
  std::string text = fmt::format("{}: {}/{} {} ({:.0f}%) {:.1f} {}/s ETA {}{}{}", label_, done_,
                                 total_, unit_, pct, rate(), unit_, format_duration(eta_s()),
                                 extra.empty() ? "" : " | ", extra);
  if (tty_) {
    int width = 24, filled = total_ > 0 ? static_cast<int>(width * pct / 100.0) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(static_cast<size_t>(width), '.');
    std::fprintf(stderr, "\r[%s] %s\033[K%s", bar.c_str(), text.c_str(), final_line ? "\n" : "");
    std::fflush(stderr);
  } else {
    log::info("{}", text);
  }
}

}  // namespace retclip::util
