// TensorBoard event files written by our own code (no TensorFlow, no protobuf
// library): TFRecord framing with masked CRC32C around hand-encoded Event protos
// holding scalar summaries. TensorBoard, tensorboardX and tf.summary read them.
//
//   auto tb = std::make_shared<train::TensorBoardSink>(run_dir / "tb");
//   tb->write(step, {{"train/loss", 2.3}}, train::wall_time_s());
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "retclip/train/metrics.hpp"

namespace retclip::train {

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses.
/// crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
inline uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

/// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(std::string_view data);

/// One TFRecord: uint64 length (little endian), masked CRC32C of those 8 bytes, the
/// data, masked CRC32C of the data.
std::string tfrecord_frame(std::string_view data);

/// Serialized tensorflow.Event protos (field numbers from event.proto / summary.proto).
namespace event_proto {
/// Event{wall_time = 1 (double), step = 2 (int64), file_version = 3 (string)}.
std::string file_version(double wall_time, const std::string& version = "brain.Event:2");
/// Event{wall_time, step, summary = 5: Summary{value = 1 (repeated):
///       Value{tag = 1 (string), simple_value = 2 (float)}}}.
std::string scalars(double wall_time, int64_t step, const std::map<std::string, double>& values);
/// Event{wall_time, step, session_log = 7: SessionLog{status = 1 (START = 1)}}: tells
/// TensorBoard that a (resumed) session starts at `step`; it purges older events at
/// steps >= `step` so a resumed run draws one clean curve.
std::string session_start(double wall_time, int64_t step);
}  // namespace event_proto

/// Writes `events.out.tfevents.<unix seconds>.<hostname>` in `dir` (created if needed).
/// The first record is the file_version event; each write() appends one Event with
/// all values of that step as simple_value scalars and flushes it to the OS.
class TensorBoardSink : public MetricsSink {
 public:
  /// `resume_step` >= 0: the run resumes after that step; a SessionLog START event at
  /// resume_step + 1 is written so TensorBoard drops stale points of the old files.
  explicit TensorBoardSink(const std::filesystem::path& dir, int64_t resume_step = -1);
  ~TensorBoardSink() override;
  TensorBoardSink(const TensorBoardSink&) = delete;
  TensorBoardSink& operator=(const TensorBoardSink&) = delete;

  void write(int64_t step, const std::map<std::string, double>& values,
             double wall_time) override;
  void flush() override;
  const std::filesystem::path& path() const { return path_; }

 private:
  void append(const std::string& event);

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace retclip::train
