// Tests of the bad_samples.tsv writer: header, one line per sample, fields kept on
// one line, and the file readable back while it is being written.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include <unistd.h>

#include "retclip/data/bad_samples.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

TEST(BadSampleLog, WritesHeaderAndOneLinePerSampleFlushedAtOnce) {
  const fs::path d = fs::temp_directory_path() / ("retclip_bad_log_" + std::to_string(::getpid()));
  fs::create_directories(d);
  const std::string path = (d / kBadSamplesFile).string();
  BadSampleLog log(path);
  log.add({"train.csv row 3 (left)", "image file not found: a.jpg", "P3"});
  log.add({"train_texts.jsonl row 9", "reason with\ta tab\nand a newline", ""});
  // Readable before the log is closed (a crash keeps what was found).
  auto back = read_bad_sample_log(path);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].origin, "train.csv row 3 (left)");
  EXPECT_EQ(back[0].patient_id, "P3");
  EXPECT_EQ(back[0].reason, "image file not found: a.jpg");
  EXPECT_EQ(back[1].reason, "reason with a tab and a newline");
  EXPECT_EQ(util::read_file(path).substr(0, 27), "source\tpatient_id\treason\ntr");
  // Threads may add at once.
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) log.add({"row " + std::to_string(t * 100 + i), "bad", ""});
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(log.count(), 202);
  EXPECT_EQ(read_bad_sample_log(path).size(), 202u);
  EXPECT_THROW(BadSampleLog((d / "no" / "such" / "dir.tsv").string()), UsageError);
}
