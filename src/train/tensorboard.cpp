// TensorBoard event-file writer: CRC32C, TFRecord framing and a minimal protobuf
// encoder for the few Event / Summary fields scalars need.
#include "retclip/train/tensorboard.hpp"

#include <unistd.h>

#include <array>
#include <type_traits>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "retclip/util/error.hpp"

namespace retclip::train {

namespace {

std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

// Protobuf wire format: key = (field << 3) | wire type; 0 varint, 1 fixed64,
// 2 length-delimited, 5 fixed32. Integers little endian.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, int field, int wire) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire));
}
template <typename T>
void put_le(std::string& out, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86/ARM little endian; protobuf fixed fields are LE
  out.append(reinterpret_cast<const char*>(b), sizeof(T));
}
void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}
void put_header(std::string& out, double wall_time, int64_t step) {
  put_key(out, 1, 1);
  put_le(out, wall_time);
  if (step != 0) {  // proto3: default values are not written
    put_key(out, 2, 0);
    put_varint(out, static_cast<uint64_t>(step));
  }
}

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(std::string_view data) {
  uint32_t crc = crc32c(data.data(), data.size());
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(std::string_view data) {
  std::string len;
  put_le(len, static_cast<uint64_t>(data.size()));
  std::string out = len;
  put_le(out, masked_crc32c(len));
  out.append(data.data(), data.size());
  put_le(out, masked_crc32c(data));
  return out;
}

namespace event_proto {

std::string file_version(double wall_time, const std::string& version) {
  std::string e;
  put_header(e, wall_time, 0);
  put_bytes(e, 3, version);
  return e;
}

std::string scalars(double wall_time, int64_t step, const std::map<std::string, double>& values) {
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    put_bytes(value, 1, tag);
    put_key(value, 2, 5);
    put_le(value, static_cast<float>(v));
    put_bytes(summary, 1, value);
  }
  std::string e;
  put_header(e, wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

std::string session_start(double wall_time, int64_t step) {
  std::string log;
  put_key(log, 1, 0);
  put_varint(log, 1);  // SessionLog.START
  std::string e;
  put_header(e, wall_time, step);
  put_bytes(e, 7, log);
  return e;
}

}  // namespace event_proto

TensorBoardSink::TensorBoardSink(const std::filesystem::path& dir, int64_t resume_step) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  RETCLIP_CHECK(!ec, "cannot create the TensorBoard directory ", dir.string(), ": ",
                ec.message(), ". HINT: check that log.dir is writable or set log.tensorboard=false");
  char host[256] = "localhost";
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  const double now = wall_time_s();
  auto base = "events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + host;
  path_ = dir / base;
  // Two sinks opened within the same second (tests, restarts) must not share a file.
  for (int i = 1; std::filesystem::exists(path_); ++i)
    path_ = dir / (base + "." + std::to_string(i));
  file_ = std::fopen(path_.c_str(), "wb");
  RETCLIP_CHECK(file_ != nullptr, "cannot create ", path_.string(), ": ", std::strerror(errno),
                ". HINT: check that log.dir is writable or set log.tensorboard=false");
  append(event_proto::file_version(now));
  if (resume_step >= 0) append(event_proto::session_start(now, resume_step + 1));
  flush();
}

TensorBoardSink::~TensorBoardSink() {
  if (file_) std::fclose(file_);
}

void TensorBoardSink::append(const std::string& event) {
  std::string rec = tfrecord_frame(event);
  RETCLIP_CHECK(std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size(),
                "cannot write to ", path_.string(), ": ", std::strerror(errno),
                ". HINT: is the disk full?");
}

void TensorBoardSink::write(int64_t step, const std::map<std::string, double>& values,
                            double wall_time) {
  if (values.empty()) return;
  append(event_proto::scalars(wall_time, step, values));
  flush();
}

void TensorBoardSink::flush() {
  if (file_) std::fflush(file_);
}

}  // namespace retclip::train
