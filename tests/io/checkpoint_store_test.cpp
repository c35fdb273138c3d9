// Checkpoint store: save/list/prune policy, broken checkpoints skipped with a reason
// (no marker, flipped byte, truncated file), leftover tmp directories, resume
// resolution, and a crash in the middle of a write simulated with fork() + _exit.
#include <ftw.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "retclip/io/checkpoint_store.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace {

// std::filesystem::remove_all resolves to libtorch.so's broken copy (null jump):
// test directories are removed with nftw instead.
int rm_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
void rm_rf(const std::filesystem::path& p) { ::nftw(p.c_str(), rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

namespace fs = std::filesystem;
using namespace retclip;
using io::CheckpointFile;
using io::CheckpointStore;

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("retclip_ckpt_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    rm_rf(root_);
    dir_ = root_ / "checkpoints";
  }
  void TearDown() override { rm_rf(root_); }

  static std::vector<CheckpointFile> files_for(int64_t step) {
    return {CheckpointFile::bytes("model.safetensors", std::string(1000 + step, 'm')),
            CheckpointFile::bytes("trainer.json", "{\"step\":" + std::to_string(step) + "}"),
            CheckpointFile::writer("optimizer.pt", [step](const fs::path& p) {
              std::ofstream(p, std::ios::binary) << "adam moments for step " << step;
            })};
  }
  static std::vector<int64_t> steps(const CheckpointStore& s) {
    std::vector<int64_t> out;
    for (const auto& c : s.list()) out.push_back(c.step);
    return out;
  }

  fs::path root_, dir_;
};

TEST_F(Checkpoint, DirNames) {
  EXPECT_EQ(CheckpointStore::dir_name(42), "step-00000042");
  EXPECT_EQ(CheckpointStore::dir_name(123456789), "step-123456789");
  EXPECT_EQ(CheckpointStore::parse_dir_name("step-00000042"), 42);
  EXPECT_FALSE(CheckpointStore::parse_dir_name("step-00000042.tmp-12"));
  EXPECT_FALSE(CheckpointStore::parse_dir_name("step-"));
  EXPECT_FALSE(CheckpointStore::parse_dir_name("latest"));
}

TEST_F(Checkpoint, SaveWritesMarkerAndVerifies) {
  CheckpointStore store(dir_, {3, 0, "cafe1234"});
  auto path = store.save(7, files_for(7), {{"epoch", 1}});
  EXPECT_EQ(path, dir_ / "step-00000007");
  EXPECT_EQ(util::read_file(path / "trainer.json"), "{\"step\":7}");
  auto check = CheckpointStore::verify(path);
  ASSERT_TRUE(check.ok) << check.reason;
  ASSERT_TRUE(check.info);
  EXPECT_EQ(check.info->step, 7);
  EXPECT_EQ(check.info->config_hash, "cafe1234");
  EXPECT_EQ(check.info->meta["epoch"], 1);
  ASSERT_EQ(check.info->files.size(), 3u);
  EXPECT_EQ(check.info->files[0].name, "model.safetensors");
  EXPECT_EQ(check.info->files[0].size, 1007);
  EXPECT_EQ(check.info->files[0].crc32, util::crc32(std::string(1007, 'm')));
  EXPECT_GT(check.info->time, 1.6e9);
  // Nothing but the final directory is left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) entries += 1, (void)e;
  EXPECT_EQ(entries, 1);
  std::cout << util::read_file(path / "COMPLETE");
}

TEST_F(Checkpoint, BadFileNamesRejected) {
  CheckpointStore store(dir_, {});
  EXPECT_THROW(store.save(1, {CheckpointFile::bytes("a/b", "x")}), Error);
  EXPECT_THROW(store.save(1, {CheckpointFile::bytes("COMPLETE", "x")}), Error);
  EXPECT_THROW(store.save(1, {CheckpointFile::bytes("x", "1"), CheckpointFile::bytes("x", "2")}),
               Error);
  EXPECT_TRUE(store.list().empty());
}

TEST_F(Checkpoint, PrunePolicyKeepLastAndKeepEvery) {
  CheckpointStore store(dir_, {2, 30, ""});
  for (int64_t s = 10; s <= 100; s += 10) store.save(s, files_for(s));
  // keep_last 2 -> 90, 100; keep_every 30 -> 30, 60, 90.
  EXPECT_EQ(steps(store), (std::vector<int64_t>{30, 60, 90, 100}));

  CheckpointStore all(root_ / "all", {0, 0, ""});  // keep_last <= 0 keeps everything
  for (int64_t s = 1; s <= 4; ++s) all.save(s, files_for(s));
  EXPECT_EQ(steps(all), (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST_F(Checkpoint, PruneNeverRemovesTheOneJustWritten) {
  CheckpointStore store(dir_, {1, 0, ""});
  store.save(50, files_for(50));
  store.save(60, files_for(60));
  EXPECT_EQ(steps(store), (std::vector<int64_t>{60}));
  // Resumed from an older point: step 20 is written while 60 exists; 20 must stay.
  store.save(20, files_for(20));
  EXPECT_EQ(steps(store), (std::vector<int64_t>{20, 60}));
  // Re-saving an existing step replaces it.
  auto files = files_for(60);
  files[1] = CheckpointFile::bytes("trainer.json", "{\"step\":60,\"again\":true}");
  store.save(60, files);
  EXPECT_EQ(util::read_file(dir_ / "step-00000060" / "trainer.json"), "{\"step\":60,\"again\":true}");
  EXPECT_TRUE(CheckpointStore::verify(dir_ / "step-00000060").ok);
}

TEST_F(Checkpoint, MissingMarkerIsSkipped) {
  CheckpointStore store(dir_, {5, 0, ""});
  store.save(1, files_for(1));
  store.save(2, files_for(2));
  fs::remove(dir_ / "step-00000002" / "COMPLETE");
  EXPECT_EQ(steps(store), (std::vector<int64_t>{1}));
  auto latest = store.latest_complete();
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step, 1);
  auto check = CheckpointStore::verify(dir_ / "step-00000002");
  EXPECT_FALSE(check.ok);
  EXPECT_NE(check.reason.find("no COMPLETE"), std::string::npos) << check.reason;
}

TEST_F(Checkpoint, FlippedByteIsSkippedWithReason) {
  CheckpointStore store(dir_, {5, 0, ""});
  store.save(1, files_for(1));
  store.save(2, files_for(2));
  const fs::path model = dir_ / "step-00000002" / "model.safetensors";
  {
    std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(500);
    f.put('\x01');
  }
  auto check = CheckpointStore::verify(dir_ / "step-00000002");
  EXPECT_FALSE(check.ok);
  std::cout << "reason: " << check.reason << "\n";
  EXPECT_NE(check.reason.find("model.safetensors"), std::string::npos);
  EXPECT_NE(check.reason.find("CRC-32"), std::string::npos);
  ::testing::internal::CaptureStderr();
  auto latest = store.latest_complete();
  std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step, 1);
  std::cout << "log: " << err;
  EXPECT_NE(err.find("step-00000002"), std::string::npos) << err;
  EXPECT_NE(err.find("corrupted"), std::string::npos) << err;

  // A truncated file is caught by its size.
  fs::resize_file(dir_ / "step-00000001" / "optimizer.pt", 3);
  auto c1 = CheckpointStore::verify(dir_ / "step-00000001");
  EXPECT_FALSE(c1.ok);
  EXPECT_NE(c1.reason.find("bytes"), std::string::npos) << c1.reason;
  EXPECT_FALSE(store.latest_complete());

  // resume=auto with every checkpoint broken stops and lists them (a fresh run would
  // overwrite the evidence); auto-or-scratch starts fresh.
  std::string msg;
  try {
    store.resolve("auto");
  } catch (const UsageError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("found 2 broken"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step-00000001: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("step-00000002: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("auto-or-scratch"), std::string::npos) << msg;
  EXPECT_FALSE(store.resolve("auto-or-scratch"));
}

TEST_F(Checkpoint, LeftoverTmpIgnoredThenCleaned) {
  CheckpointStore store(dir_, {5, 0, ""});
  store.save(1, files_for(1));
  const fs::path tmp = dir_ / "step-00000002.tmp-99999";
  fs::create_directories(tmp);
  std::ofstream(tmp / "model.safetensors") << "half";
  std::ofstream(tmp / "COMPLETE") << "{}";
  EXPECT_EQ(steps(store), (std::vector<int64_t>{1}));
  EXPECT_EQ(store.latest_complete()->step, 1);
  store.save(3, files_for(3));
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_EQ(steps(store), (std::vector<int64_t>{1, 3}));
}

TEST_F(Checkpoint, CrashMidWriteKeepsPreviousAsLatest) {
  CheckpointStore store(dir_, {5, 0, ""});
  store.save(100, files_for(100));
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: dies inside the optimizer writer, after the model file was written.
    CheckpointStore child(dir_, {5, 0, ""});
    auto files = files_for(200);
    files[2] = CheckpointFile::writer("optimizer.pt", [](const fs::path& p) {
      std::ofstream f(p, std::ios::binary);
      f << std::string(4096, 'o');
      f.flush();
      ::_exit(42);
    });
    child.save(200, files);
    ::_exit(0);  // not reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 42);
  const fs::path leftover = dir_ / ("step-00000200.tmp-" + std::to_string(pid));
  EXPECT_TRUE(fs::exists(leftover / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "step-00000200"));
  auto latest = store.latest_complete();
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step, 100);
  EXPECT_EQ(store.resolve("auto")->step, 100);
  store.save(200, files_for(200));
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_EQ(store.latest_complete()->step, 200);
}

TEST_F(Checkpoint, Resolve) {
  CheckpointStore store(dir_, {5, 0, ""});
  EXPECT_FALSE(store.resolve(""));
  EXPECT_FALSE(store.resolve("auto"));  // nothing yet: start fresh
  store.save(4, files_for(4));
  store.save(8, files_for(8));
  EXPECT_EQ(store.resolve("auto")->step, 8);
  EXPECT_EQ(store.resolve((dir_ / "step-00000004").string())->step, 4);
  EXPECT_EQ(store.resolve(dir_.string())->step, 8);  // a checkpoints directory
  EXPECT_THROW(store.resolve((root_ / "nope").string()), UsageError);
  fs::remove(dir_ / "step-00000004" / "trainer.json");
  try {
    store.resolve((dir_ / "step-00000004").string());
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("trainer.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("HINT"), std::string::npos) << e.what();
  }
  fs::create_directories(root_ / "empty");
  EXPECT_THROW(store.resolve((root_ / "empty").string()), UsageError);
}

}  // namespace
