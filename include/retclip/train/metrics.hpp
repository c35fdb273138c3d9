// Metrics sinks: the trainer hands each sink (step, {name: value}, wall time) once per
// logged step. JsonlSink keeps `metrics.jsonl` consistent across resumes; MultiSink
// fans out to several sinks (JSONL, TensorBoard, ...).
//
//   train::MultiSink sinks;
//   sinks.add(std::make_shared<train::JsonlSink>(run_dir / "metrics.jsonl", resume_step));
//   sinks.write(step, {{"train/loss", loss}, {"train/lr", lr}}, train::wall_time_s());
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace retclip::train {

/// Seconds since the Unix epoch (the `time` field of every sink).
double wall_time_s();

/// Seconds from `a` to `b` (phase and progress timings).
double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b);

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  /// Records `values` (metric name -> value, names like "train/loss") for `step`.
  virtual void write(int64_t step, const std::map<std::string, double>& values,
                     double wall_time) = 0;
  /// Pushes buffered records to the OS.
  virtual void flush() {}
};

/// `metrics.jsonl`: one JSON object per line, keys "step", "time", then the metric
/// names in sorted order: {"step":10,"time":1.7e9,"train/loss":2.3,"train/lr":3e-05}.
/// Each line is appended with a single write(2) and is on disk (page cache) when
/// write() returns. Non-finite values are written as null (JSON has no NaN/inf).
class JsonlSink : public MetricsSink {
 public:
  /// `resume_step` < 0: a fresh run; an existing file is truncated.
  /// `resume_step` >= 0: the run resumes after that step; lines with a step greater
  /// than resume_step (written after the checkpoint the run resumes from) and a torn
  /// last line are dropped (the file is rewritten atomically), later lines appended.
  explicit JsonlSink(std::filesystem::path path, int64_t resume_step = -1);
  ~JsonlSink() override;
  JsonlSink(const JsonlSink&) = delete;
  JsonlSink& operator=(const JsonlSink&) = delete;

  void write(int64_t step, const std::map<std::string, double>& values,
             double wall_time) override;
  const std::filesystem::path& path() const { return path_; }
  /// Lines dropped when opening for a resume.
  int64_t dropped_lines() const { return dropped_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  int64_t dropped_ = 0;
};

/// Forwards every record to each added sink, in the order they were added.
class MultiSink : public MetricsSink {
 public:
  void add(std::shared_ptr<MetricsSink> sink);
  void write(int64_t step, const std::map<std::string, double>& values,
             double wall_time) override;
  void flush() override;
  size_t size() const { return sinks_.size(); }

 private:
  std::vector<std::shared_ptr<MetricsSink>> sinks_;
};

}  // namespace retclip::train
