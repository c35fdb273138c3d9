// TensorBoard writer: CRC32C vectors, TFRecord framing, and a round trip through
// TensorBoard's own EventAccumulator (tests/python/tb_read.py), including a resumed
// run whose stale points are purged.
#include <ftw.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "retclip/train/tensorboard.hpp"
#include "retclip/util/fs.hpp"

namespace {

// std::filesystem::remove_all resolves to libtorch.so's broken copy (null jump):
// test directories are removed with nftw instead.
int rm_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
void rm_rf(const std::filesystem::path& p) { ::nftw(p.c_str(), rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

namespace fs = std::filesystem;
using namespace retclip;

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(train::crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(train::crc32c(""), 0x00000000u);
  EXPECT_EQ(train::crc32c("a"), 0xC1D04330u);
  // RFC 3720 B.4: 32 bytes of zeros, 32 bytes of 0xFF, 0..31 ascending.
  std::string zeros(32, '\0'), ones(32, '\xFF'), inc;
  for (int i = 0; i < 32; ++i) inc.push_back(static_cast<char>(i));
  EXPECT_EQ(train::crc32c(zeros), 0x8A9136AAu);
  EXPECT_EQ(train::crc32c(ones), 0x62A8AB43u);
  EXPECT_EQ(train::crc32c(inc), 0x46DD794Eu);
  // Chaining over pieces equals one pass.
  EXPECT_EQ(train::crc32c("6789", 4, train::crc32c("12345", 5)), 0xE3069283u);
}

TEST(TfRecord, Framing) {
  std::string data = "hello";
  std::string rec = train::tfrecord_frame(data);
  ASSERT_EQ(rec.size(), 8u + 4u + data.size() + 4u);
  uint64_t len = 0;
  std::memcpy(&len, rec.data(), 8);
  EXPECT_EQ(len, 5u);
  uint32_t len_crc = 0, data_crc = 0;
  std::memcpy(&len_crc, rec.data() + 8, 4);
  std::memcpy(&data_crc, rec.data() + 12 + data.size(), 4);
  EXPECT_EQ(len_crc, train::masked_crc32c(rec.substr(0, 8)));
  uint32_t c = train::crc32c(data);
  EXPECT_EQ(data_crc, ((c >> 15) | (c << 17)) + 0xa282ead8u);
  EXPECT_EQ(rec.substr(12, 5), data);
}

TEST(EventProto, ScalarBytes) {
  // Event{wall_time=1.0, step=3, summary{value{tag="a", simple_value=0.5}}}, encoded by
  // hand from the field numbers of event.proto / summary.proto.
  std::string got = train::event_proto::scalars(1.0, 3, {{"a", 0.5}});
  const unsigned char want[] = {0x09, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F,  // wall_time
                                0x10, 0x03,                            // step
                                0x2A, 0x0A,                            // summary, 10 bytes
                                0x0A, 0x08,                            // value, 8 bytes
                                0x0A, 0x01, 'a',                       // tag
                                0x15, 0, 0, 0, 0x3F};                  // simple_value
  EXPECT_EQ(got, std::string(reinterpret_cast<const char*>(want), sizeof want));
}

TEST(EventProto, SessionStartBytes) {
  // Event{wall_time=0.5, step=300, session_log(7){status=START(1)}}.
  std::string got = train::event_proto::session_start(0.5, 300);
  const unsigned char want[] = {0x09, 0, 0, 0, 0, 0, 0, 0xE0, 0x3F,  // wall_time
                                0x10, 0xAC, 0x02,                      // step 300 (varint)
                                0x3A, 0x02, 0x08, 0x01};               // session_log
  EXPECT_EQ(got, std::string(reinterpret_cast<const char*>(want), sizeof want));
  // file_version is field 3.
  std::string fv = train::event_proto::file_version(0.5);
  EXPECT_EQ(fv.substr(9), std::string("\x1A\x0D") + "brain.Event:2");
}

struct TbRead {
  bool available = false;
  nlohmann::json json;
};

TbRead tb_read(const fs::path& target, const fs::path& out) {
  std::string cmd = std::string("python3 ") + RETCLIP_SOURCE_DIR + "/tests/python/tb_read.py '" +
                    target.string() + "' > '" + out.string() + "' 2> '" + out.string() +
                    ".err'";
  int rc = std::system(cmd.c_str());
  TbRead r;
  // 3: tb_read.py could not import tensorboard; 127: no python3 at all.
  if (rc != 0 && WIFEXITED(rc) && (WEXITSTATUS(rc) == 3 || WEXITSTATUS(rc) == 127)) return r;
  EXPECT_EQ(rc, 0) << cmd << "\n" << util::read_file(out.string() + ".err");
  r.available = true;
  r.json = nlohmann::json::parse(util::read_file(out));
  return r;
}

class TensorBoardRoundTrip : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("retclip_tb_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    rm_rf(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { rm_rf(dir_); }
  fs::path dir_;
};

TEST_F(TensorBoardRoundTrip, EventAccumulatorReadsScalars) {
  fs::path events = dir_ / "tb";
  {
    train::TensorBoardSink tb(events);
    EXPECT_EQ(tb.path().filename().string().rfind("events.out.tfevents.", 0), 0u);
    for (int64_t step = 0; step < 5; ++step)
      tb.write(step, {{"train/loss", 2.0 / (step + 1)}, {"train/lr", 1e-5 * step}},
               1.7e9 + step);
    tb.write(1000000000000LL, {{"train/loss", -3.25}}, 1.8e9);  // large step: 6-byte varint
  }
  auto r = tb_read(events, dir_ / "out.json");
  if (!r.available) GTEST_SKIP() << "python3 lacks the tensorboard package";
  std::cout << r.json.dump() << "\n";
  EXPECT_EQ(r.json["file_version"], 2.0);  // EventAccumulator parses "brain.Event:2"
  auto loss = r.json["scalars"]["train/loss"];
  auto lr = r.json["scalars"]["train/lr"];
  ASSERT_EQ(loss.size(), 6u);
  ASSERT_EQ(lr.size(), 5u);
  double max_diff = 0;
  for (int64_t step = 0; step < 5; ++step) {
    EXPECT_EQ(loss[step][0].get<int64_t>(), step);
    max_diff = std::max(max_diff, std::abs(loss[step][1].get<double>() -
                                           static_cast<float>(2.0 / (step + 1))));
    max_diff = std::max(max_diff, std::abs(lr[step][1].get<double>() -
                                           static_cast<float>(1e-5 * step)));
  }
  EXPECT_EQ(loss[5][0].get<int64_t>(), 1000000000000LL);
  EXPECT_EQ(loss[5][1].get<double>(), -3.25);
  std::cout << "max |python - float(value)|: " << max_diff << "\n";
  EXPECT_EQ(max_diff, 0.0);
}

TEST_F(TensorBoardRoundTrip, ResumePurgesStalePoints) {
  fs::path events = dir_ / "tb";
  {
    train::TensorBoardSink tb(events);
    for (int64_t step = 0; step < 10; ++step) tb.write(step, {{"train/loss", 1.0}}, 1.7e9 + step);
  }
  {
    // Crash after step 9; the last checkpoint was step 5: the resumed run logs 6..7.
    train::TensorBoardSink tb(events, /*resume_step=*/5);
    EXPECT_NE(tb.path(), fs::path());
    for (int64_t step = 6; step < 8; ++step) tb.write(step, {{"train/loss", 2.0}}, 1.8e9 + step);
  }
  int files = 0;
  for (const auto& e : fs::directory_iterator(events)) files += e.is_regular_file();
  EXPECT_EQ(files, 2);
  auto r = tb_read(events, dir_ / "out.json");
  if (!r.available) GTEST_SKIP() << "python3 lacks the tensorboard package";
  auto loss = r.json["scalars"]["train/loss"];
  std::cout << loss.dump() << "\n";
  ASSERT_EQ(loss.size(), 8u);
  for (int64_t i = 0; i < 8; ++i) {
    EXPECT_EQ(loss[i][0].get<int64_t>(), i);
    EXPECT_EQ(loss[i][1].get<double>(), i < 6 ? 1.0 : 2.0) << "step " << i;
  }
}

}  // namespace
