// metrics.jsonl: line format, append + flush per write, resume truncation (stale and
// torn lines), and MultiSink fan-out.
#include <ftw.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "retclip/train/metrics.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace {

// std::filesystem::remove_all resolves to libtorch.so's broken copy (null jump):
// test directories are removed with nftw instead.
int rm_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
void rm_rf(const std::filesystem::path& p) { ::nftw(p.c_str(), rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

namespace fs = std::filesystem;
using namespace retclip;

std::vector<nlohmann::json> read_lines(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::istringstream in(util::read_file(p));
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

class Metrics : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("retclip_metrics_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    rm_rf(dir_);
  }
  void TearDown() override { rm_rf(dir_); }
  fs::path dir_;
};

TEST_F(Metrics, JsonlLineFormatAndFlush) {
  fs::path p = dir_ / "run" / "metrics.jsonl";
  train::JsonlSink sink(p);
  sink.write(10, {{"train/loss", 2.5}, {"train/lr", 3e-05}, {"train/bad", std::nan("")}},
             1700000000.25);
  // Readable before the sink is closed: every write reaches the OS.
  std::string text = util::read_file(p);
  EXPECT_EQ(text,
            "{\"step\":10,\"time\":1700000000.25,\"train/bad\":null,\"train/loss\":2.5,"
            "\"train/lr\":3e-05}\n");
  sink.write(11, {{"train/loss", 0.1 + 0.2}}, 1700000001.0);
  auto lines = read_lines(p);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1]["train/loss"].get<double>(), 0.1 + 0.2);  // round-trip precision
}

TEST_F(Metrics, FreshRunTruncates) {
  fs::path p = dir_ / "metrics.jsonl";
  { train::JsonlSink(p).write(1, {{"a", 1}}, 0); }
  { train::JsonlSink(p).write(2, {{"a", 2}}, 0); }
  auto lines = read_lines(p);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["step"], 2);
}

TEST_F(Metrics, ResumeDropsLinesAfterCheckpointAndTornTail) {
  fs::path p = dir_ / "metrics.jsonl";
  {
    train::JsonlSink sink(p);
    for (int64_t s = 1; s <= 8; ++s) sink.write(s, {{"train/loss", 1.0 * s}}, 100.0 + s);
  }
  {  // a crash in the middle of a line
    std::ofstream f(p, std::ios::app);
    f << "{\"step\":9,\"time\":1";
  }
  train::JsonlSink sink(p, /*resume_step=*/5);
  EXPECT_EQ(sink.dropped_lines(), 4);  // steps 6, 7, 8 and the torn line
  sink.write(6, {{"train/loss", 60.0}}, 200.0);
  auto lines = read_lines(p);
  ASSERT_EQ(lines.size(), 6u);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(lines[i]["step"].get<int64_t>(), i + 1);
  EXPECT_EQ(lines[5]["train/loss"].get<double>(), 60.0);
  EXPECT_EQ(lines[4]["train/loss"].get<double>(), 5.0);
}

TEST_F(Metrics, ResumeWithoutFileStartsOne) {
  fs::path p = dir_ / "metrics.jsonl";
  train::JsonlSink sink(p, 100);
  EXPECT_EQ(sink.dropped_lines(), 0);
  sink.write(101, {{"x", 1}}, 0);
  EXPECT_EQ(read_lines(p).size(), 1u);
}

struct Recorder : train::MetricsSink {
  std::vector<int64_t> steps;
  int flushes = 0;
  void write(int64_t step, const std::map<std::string, double>&, double) override {
    steps.push_back(step);
  }
  void flush() override { ++flushes; }
};

TEST_F(Metrics, MultiSinkFansOut) {
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  train::MultiSink multi;
  multi.add(a);
  multi.add(b);
  EXPECT_EQ(multi.size(), 2u);
  multi.write(3, {{"x", 1}}, train::wall_time_s());
  multi.write(4, {{"x", 2}}, train::wall_time_s());
  multi.flush();
  EXPECT_EQ(a->steps, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(b->steps, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(b->flushes, 1);
  EXPECT_THROW(multi.add(nullptr), retclip::Error);
  EXPECT_GT(train::wall_time_s(), 1.6e9);
}

TEST(StepTiming, SecondsBetweenTwoInstants) {
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_DOUBLE_EQ(train::seconds_between(t0, t0 + std::chrono::milliseconds(1500)), 1.5);
  EXPECT_DOUBLE_EQ(train::seconds_between(t0 + std::chrono::seconds(2), t0), -2.0);
}

}  // namespace
