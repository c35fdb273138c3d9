// bad_samples.tsv: every bad sample a run or a pack found, one per line, so that none
// is only counted. Written into the run directory (train) or the shard directory
// (pack); the messages that summarise bad samples name the file.
//
//   data::BadSampleLog log("runs/x/bad_samples.tsv");   // truncates, writes the header
//   log.add({"train.csv row 7 (left)", "image file not found: ...", "P0007"});
#pragma once

#include <cstdint>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "retclip/data/sample.hpp"

namespace retclip::data {

/// File name of the list inside a run or shard directory.
constexpr const char* kBadSamplesFile = "bad_samples.tsv";

/// Appends bad samples to a tab-separated file with the header
/// `source<TAB>patient_id<TAB>reason` (source: file and row as in messages). Tabs and
/// line breaks inside fields become spaces. Each line is flushed when added, so the
/// list survives a crash. Thread-safe.
class BadSampleLog {
 public:
  /// Creates or truncates `path` (its folder must exist). Throws UsageError naming it.
  explicit BadSampleLog(std::string path);
  void add(const BadSample& b);
  void add(const std::vector<BadSample>& v);
  const std::string& path() const { return path_; }
  /// Lines written so far (the header not counted).
  int64_t count() const;

 private:
  std::string path_;
  mutable std::mutex mu_;
  std::ofstream out_;
  int64_t count_ = 0;
};

/// Reads a bad_samples.tsv back (tests, tools): one BadSample per line after the header.
std::vector<BadSample> read_bad_sample_log(const std::string& path);

}  // namespace retclip::data
