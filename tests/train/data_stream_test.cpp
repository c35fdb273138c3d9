// Tests of the trainer's data opening: manifests are pre-checked before the first step
// (fail names the first bad row and the count, skip drops and lists them in the run
// directory's bad_samples.tsv), and an image damaged mid-scan stops the loader by name.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <filesystem>
#include <fstream>
#include <random>

#include <unistd.h>

#include "retclip/config/config.hpp"
#include "retclip/data/bad_samples.hpp"
#include "retclip/data/shards.hpp"
#include "retclip/train/data_stream.hpp"
#include "retclip/util/error.hpp"

namespace fs = std::filesystem;
using namespace retclip;

namespace {

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg) << "\nwanted: " << (part)

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

#ifdef RETCLIP_WITH_IMGCODECS
/// A fundus-like JPEG: a bright disc with noise on black.
std::string fundus_jpeg(uint32_t seed) {
  cv::Mat img(96, 128, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat noise(img.size(), CV_8UC3);
  cv::theRNG().state = seed;
  cv::randu(noise, cv::Scalar(0, 0, 0), cv::Scalar(60, 60, 60));
  cv::circle(img, {64, 48}, 44, cv::Scalar(40, 90, 200), cv::FILLED);
  cv::Mat mask(img.size(), CV_8U, cv::Scalar(0));
  cv::circle(mask, {64, 48}, 44, cv::Scalar(255), cv::FILLED);
  cv::add(img, noise, img, mask);
  std::vector<uchar> buf;
  cv::imencode(".jpg", img, buf, {cv::IMWRITE_JPEG_QUALITY, 95});
  return std::string(buf.begin(), buf.end());
}

/// The same JPEG with 48 bytes inside the scan overwritten (no 0xFF, so no marker is
/// created and the end-of-image marker stays intact).
std::string damaged_mid_scan(std::string jpg) {
  const size_t sos = jpg.rfind("\xFF\xDA"), mid = sos + (jpg.size() - sos) / 2;
  std::mt19937 rng(1);
  for (size_t i = mid; i < mid + 48; ++i) jpg[i] = static_cast<char>(rng() % 0xFF);
  return jpg;
}

struct DataRun {
  fs::path dir, run_dir;
  config::Config cfg;
};

/// Three good patients followed by `bad_rows` (csv lines naming files in dir).
DataRun make_run(const std::string& name, const std::string& bad_rows, const std::string& policy) {
  DataRun r;
  r.dir = fs::temp_directory_path() / ("retclip_data_stream_" + std::to_string(::getpid())) / name;
  fs::remove_all(r.dir);
  fs::create_directories(r.dir);
  r.run_dir = r.dir / "run";
  std::string csv = "patient_id,left_image,right_image,report\n";
  for (int i = 0; i < 3; ++i) {
    write_bytes(r.dir / ("g" + std::to_string(i) + ".jpg"), fundus_jpeg(i + 1));
    csv += "G" + std::to_string(i) + ",g" + std::to_string(i) + ".jpg,,left eye normal\n";
  }
  write_bytes(r.dir / "train.csv", csv + bad_rows);
  write_bytes(r.dir / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nleft\neye\nnormal\n");
  r.cfg.data.train = (r.dir / "train.csv").string();
  r.cfg.data.image_size = 32;
  r.cfg.data.context_length = 8;
  r.cfg.data.workers = 0;
  r.cfg.data.augment.enabled = false;
  r.cfg.data.tokenizer.type = "wordpiece";
  r.cfg.data.tokenizer.path = (r.dir / "vocab.txt").string();
  r.cfg.data.on_bad_sample = config::parse<config::BadSamplePolicy>(policy, "on_bad_sample");
  r.cfg.train.batch_size = 1;
  r.cfg.train.device = "cpu";
  r.cfg.log.dir = r.run_dir.string();
  return r;
}
#endif

}  // namespace

#ifdef RETCLIP_WITH_IMGCODECS

TEST(TrainData, FailStopsBeforeTheFirstStepNamingTheFirstBadRowAndTheCount) {
  // Before: open() succeeded and the loader failed only when it reached the row.
  DataRun r = make_run("fail", "B0,g0.jpg,missing.jpg,x\nB1,notes.jpg,,x\n", "fail");
  write_bytes(r.dir / "notes.jpg", "left eye normal\n");
  try {
    train::TrainData::open(r.cfg, 0, 1);
    FAIL() << "opened a manifest with two bad rows under data.on_bad_sample fail";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_HAS(msg, "bad sample at train.csv row 5 (right): image file not found: " +
                        (r.dir / "missing.jpg").string());
    EXPECT_HAS(msg, "2 patients have bad images, all listed in " +
                        (r.run_dir / data::kBadSamplesFile).string());
  }
  auto listed = data::read_bad_sample_log((r.run_dir / data::kBadSamplesFile).string());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[1].origin, "train.csv row 6 (left)");
  EXPECT_HAS(listed[1].reason, "is not an image");
}

TEST(TrainData, SkipDropsThemAndListsThemInTheRunDirectory) {
  DataRun r = make_run("skip", "B0,g0.jpg,missing.jpg,x\nB1,adir,,x\n", "skip");
  fs::create_directories(r.dir / "adir");
  const fs::path other_run = r.dir / "explicit-run";
  auto d = train::TrainData::open(r.cfg, 0, 1, other_run.string());
  EXPECT_EQ(d.size(), 3);
  EXPECT_EQ(d.bad_sample_list(), (other_run / data::kBadSamplesFile).string());
  auto listed = data::read_bad_sample_log(d.bad_sample_list());
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].patient_id, "B0");
  EXPECT_HAS(listed[1].reason, "is a directory");
  EXPECT_NO_THROW(d.next_train(at::Device(at::kCPU)));
}

TEST(TrainData, JpegDamagedMidScanStopsAFailRunBeforeTheFirstStep) {
  // Under fail the pre-check reads the compressed data too: the damage in the scan stops
  // open(), not the loader when it reaches the row.
  DataRun r = make_run("scan", "B9,scan.jpg,,left eye normal\n", "fail");
  write_bytes(r.dir / "scan.jpg", damaged_mid_scan(fundus_jpeg(7)));
  try {
    train::TrainData::open(r.cfg, 0, 1);
    FAIL() << "opened a manifest with a JPEG damaged mid-scan under data.on_bad_sample fail";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_HAS(msg, "bad sample at train.csv row 5 (left): image " +
                        (r.dir / "scan.jpg").string() +
                        " is a damaged JPEG: libjpeg reports 'Corrupt JPEG data");
    EXPECT_HAS(msg, "pre-check before the first step: 1 patient has a bad image");
  }
  auto listed = data::read_bad_sample_log((r.run_dir / data::kBadSamplesFile).string());
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].patient_id, "B9");
}

TEST(TrainData, ShardsPackedLargerAreASourceForTheModelInput) {
  // Shards packed at 48 px for a 32 px model: data.source_size says so, and the random
  // resized crop then samples the 48 px square (one resample) rather than a 32 px one.
  DataRun r = make_run("larger", "", "fail");
  data::PackOptions po;
  po.manifest = r.cfg.data.train;
  po.out = (r.dir / "shards48").string();
  po.image_size = 48;
  po.progress = false;
  data::pack_dataset(po);
  r.cfg.data.train = po.out;
  r.cfg.data.augment.enabled = true;
  std::string msg;
  try {
    train::TrainData::open(r.cfg, 0, 1);
  } catch (const UsageError& e) {
    msg = e.what();
  }
  EXPECT_HAS(msg, "hold 48 px images but data.image_size is 32. HINT: set data.source_size=48");
  r.cfg.data.source_size = 48;
  auto d = train::TrainData::open(r.cfg, 0, 1);
  auto mb = d.next_train(at::Device(at::kCPU));
  EXPECT_EQ(mb.left.sizes(), (at::IntArrayRef{1, 3, 32, 32}));
  ASSERT_TRUE(mb.eye_report_id.defined());
  EXPECT_EQ(mb.eye_report_id.sizes(), (at::IntArrayRef{1, 2}));
  // The shards were field-of-view cropped: training them as `resize` is refused.
  r.cfg.data.preprocess = config::Preprocess::kResize;
  msg.clear();
  try {
    train::TrainData::open(r.cfg, 0, 1);
  } catch (const UsageError& e) {
    msg = e.what();
  }
  EXPECT_HAS(msg, "were packed with --preprocess fundus_crop but data.preprocess is resize");
}

#endif  // RETCLIP_WITH_IMGCODECS
