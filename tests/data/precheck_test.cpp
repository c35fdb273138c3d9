// Tests of the pre-check before training: every kind of bad row is found before any
// decoding, skip drops exactly those patients and lists them, fail names the first and
// the count and also reads the compressed data (truncated or damaged JPEG, PNG CRC, 1x1
// image), a patient named by several texts counts once, and its speed.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include <unistd.h>

#include "retclip/data/base64.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/data/precheck.hpp"
#include "retclip/util/error.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

namespace {

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg) << "\nwanted: " << (part)

fs::path fresh_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("retclip_precheck_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

#ifdef RETCLIP_WITH_IMGCODECS
std::string small_jpeg() {
  cv::Mat img(48, 64, CV_8UC3, cv::Scalar(30, 80, 190));
  std::vector<uchar> buf;
  cv::imencode(".jpg", img, buf);
  return std::string(buf.begin(), buf.end());
}

/// A manifest with good rows and one row of each kind of bad file, in this order.
struct BadManifest {
  fs::path dir, csv;
  int good = 0, bad = 0;
};

BadManifest make_bad_manifest(const std::string& name) {
  BadManifest m;
  m.dir = fresh_dir(name);
  const std::string jpg = small_jpeg();
  std::string csv = "patient_id,left_image,right_image,report\n";
  auto row = [&](const std::string& id, const std::string& left, const std::string& right) {
    csv += id + "," + left + "," + right + ",normal fundus\n";
  };
  for (int i = 0; i < 4; ++i) {
    write_bytes(m.dir / ("g" + std::to_string(i) + ".jpg"), jpg);
    row("G" + std::to_string(i), "g" + std::to_string(i) + ".jpg", "g0.jpg");
  }
  m.good = 4;
  row("B0", "g0.jpg", "missing.jpg");  // row 6: missing file
  fs::create_directories(m.dir / "adir.jpg");
  row("B1", "adir.jpg", "");  // row 7: a directory
  write_bytes(m.dir / "empty.jpg", "");
  row("B2", "empty.jpg", "g1.jpg");  // row 8: empty file
  write_bytes(m.dir / "text.jpg", "this is not a photo\n");
  row("B3", "", "text.jpg");  // row 9: text named .jpg
  fs::create_symlink(m.dir / "loop2.jpg", m.dir / "loop1.jpg");
  fs::create_symlink(m.dir / "loop1.jpg", m.dir / "loop2.jpg");
  row("B4", "loop1.jpg", "");  // row 10: symlink loop
  m.bad = 5;
  write_bytes(m.dir / "train.csv", csv);
  m.csv = m.dir / "train.csv";
  return m;
}
#endif

}  // namespace

#ifdef RETCLIP_WITH_IMGCODECS

TEST(Precheck, SkipDropsEveryKindOfBadRowAndListsThem) {
  BadManifest m = make_bad_manifest("skip");
  auto samples = read_manifest(m.csv.string(), BadSamplePolicy::kSkip);
  ASSERT_EQ(samples.size(), static_cast<size_t>(m.good + m.bad));  // the reader opens no file
  BadSampleLog log((m.dir / kBadSamplesFile).string());
  PrecheckOptions o;
  o.log = &log;
  PrecheckReport rep;
  auto kept = precheck_samples(samples, o, &rep);
  ASSERT_EQ(kept.size(), static_cast<size_t>(m.good));
  for (const Sample& s : kept) EXPECT_EQ(s.patient_id[0], 'G');
  ASSERT_EQ(rep.bad.size(), static_cast<size_t>(m.bad));
  EXPECT_HAS(rep.bad[0].origin, "train.csv row 6 (right)");
  EXPECT_HAS(rep.bad[0].reason, "image file not found");
  EXPECT_HAS(rep.bad[1].reason, "is a directory");
  EXPECT_HAS(rep.bad[2].reason, "is empty (0 bytes)");
  EXPECT_HAS(rep.bad[3].origin, "train.csv row 9 (right)");
  EXPECT_HAS(rep.bad[3].reason, "is not an image (it starts with 'this is not a ph')");
  EXPECT_HAS(rep.bad[4].reason, "is a symlink loop");
  EXPECT_EQ(rep.bad[4].patient_id, "B4");
  EXPECT_EQ(rep.images, 4 + 5);  // g0..g3 and the five bad paths (g0 and g1 counted once)
  auto listed = read_bad_sample_log(log.path());
  ASSERT_EQ(listed.size(), static_cast<size_t>(m.bad));
  EXPECT_EQ(listed[2].origin, "train.csv row 8 (left)");
}

TEST(Precheck, FailNamesTheFirstBadRowAndTheCountAfterCheckingAll) {
  BadManifest m = make_bad_manifest("fail");
  auto samples = read_manifest(m.csv.string(), BadSamplePolicy::kFail);
  BadSampleLog log((m.dir / kBadSamplesFile).string());
  PrecheckOptions o;
  o.policy = BadSamplePolicy::kFail;
  o.log = &log;
  try {
    precheck_samples(samples, o);
    FAIL() << "a manifest with 5 bad rows passed the pre-check";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_HAS(msg, "bad sample at train.csv row 6 (right): image file not found: " +
                        (m.dir / "missing.jpg").string());
    EXPECT_HAS(msg, "(pre-check before the first step: 5 patients have bad images, all listed in " +
                        log.path());
    EXPECT_HAS(msg, "HINT: fix or remove those rows, or set data.on_bad_sample: skip");
  }
  EXPECT_EQ(read_bad_sample_log(log.path()).size(), 5u);
}

TEST(Precheck, OversizedImagesAreRefusedFromTheHeader) {
  const fs::path d = fresh_dir("big");
  cv::Mat img(600, 600, CV_8UC3, cv::Scalar(10, 120, 200));
  cv::imwrite((d / "big.png").string(), img);
  write_bytes(d / "ok.jpg", small_jpeg());
  write_bytes(d / "m.csv",
              "patient_id,left_image,right_image,report\nA,ok.jpg,big.png,r\nB,ok.jpg,,r\n");
  auto samples = read_manifest((d / "m.csv").string(), BadSamplePolicy::kSkip);
  PrecheckOptions o;
  o.max_pixels = 300 * 300;
  PrecheckReport rep;
  auto kept = precheck_samples(samples, o, &rep);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].patient_id, "B");
  ASSERT_EQ(rep.bad.size(), 1u);
  EXPECT_HAS(rep.bad[0].reason, "600 x 600 = 0.4 megapixels, above the limit of 0.1 megapixels");
}

TEST(Precheck, RetclipPatientNamedByManyTextsCountsOnce) {
  const fs::path d = fresh_dir("retclip");
  const std::string jpg = small_jpeg();
  // P1's left image is text, not a JPEG; four texts name P1.
  write_bytes(d / "train_imgs.tsv", "P0\t" + base64_encode(jpg, true) + "\t\nP1\t" +
                                        base64_encode("not an image at all", true) + "\t" +
                                        base64_encode(jpg, true) + "\n");
  std::string texts;
  for (int t = 0; t < 4; ++t)
    texts += "{\"text_id\": " + std::to_string(t) + ", \"text\": \"report " + std::to_string(t) +
             "\", \"image_ids\": [\"P1\", \"P0\"]}\n";
  write_bytes(d / "train_texts.jsonl", texts);
  auto samples = read_retclip(d.string(), "train", BadSamplePolicy::kSkip);
  ASSERT_EQ(samples.size(), 8u);
  PrecheckReport rep;
  auto kept = precheck_samples(samples, PrecheckOptions{}, &rep);
  EXPECT_EQ(kept.size(), 4u);     // P0 with each of its four texts
  ASSERT_EQ(rep.bad.size(), 1u);  // one patient, not four texts
  EXPECT_EQ(rep.bad[0].patient_id, "P1");
  EXPECT_HAS(rep.bad[0].origin, "train_texts.jsonl row 1 (left)");
  EXPECT_HAS(rep.bad[0].reason, "train_imgs.tsv row 2 (left) is not an image");
  EXPECT_EQ(rep.images, 3);  // shared images checked once
}

TEST(Precheck, ThousandsOfFilesTakeAFractionOfASecond) {
  const fs::path d = fresh_dir("many");
  const std::string jpg = small_jpeg();
  std::string csv = "patient_id,left_image,right_image,report\n";
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const std::string l = "l" + std::to_string(i) + ".jpg", r = "r" + std::to_string(i) + ".jpg";
    write_bytes(d / l, jpg);
    write_bytes(d / r, jpg);
    csv += "P" + std::to_string(i) + "," + l + "," + r + ",report\n";
  }
  write_bytes(d / "m.csv", csv);
  auto samples = read_manifest((d / "m.csv").string(), BadSamplePolicy::kSkip);
  PrecheckReport rep;
  auto kept = precheck_samples(samples, PrecheckOptions{}, &rep);
  EXPECT_EQ(kept.size(), static_cast<size_t>(n));
  EXPECT_EQ(rep.images, 2 * n);
  std::printf("pre-check of %d images: %.3f s (%.1f us per image)\n", 2 * n, rep.seconds,
              rep.seconds * 1e6 / (2 * n));
  EXPECT_LT(rep.seconds, 10.0);  // 100k images in well under a minute on a shared 2-core VM
}

namespace {

std::string encode_bgr(const cv::Mat& bgr, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf, params)) << ext;
  return std::string(buf.begin(), buf.end());
}

/// Noise with a disc: a JPEG of it has long entropy-coded scans.
cv::Mat noisy_photo(int w, int h) {
  cv::Mat img(h, w, CV_8UC3);
  cv::RNG rng(7);
  rng.fill(img, cv::RNG::UNIFORM, 0, 256);
  cv::circle(img, {w / 2, h / 2}, std::min(w, h) / 3, cv::Scalar(40, 90, 200), cv::FILLED);
  return img;
}

/// Good rows around one row for each kind of damage that only the data shows (or, for
/// the 1x1 image, that only the preprocessing refused): rows 3..6 of damaged.csv.
fs::path make_damaged_manifest(const std::string& name) {
  const fs::path d = fresh_dir(name);
  const std::string good = encode_bgr(noisy_photo(256, 192), ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  write_bytes(d / "good.jpg", good);
  write_bytes(d / "truncated.jpg", good.substr(0, good.size() * 2 / 3));
  std::string scan = good;  // bytes overwritten inside the scan, end marker intact
  const size_t mid = scan.rfind("\xFF\xDA") + (scan.size() - scan.rfind("\xFF\xDA")) / 2;
  std::mt19937 rng(1);
  for (size_t i = mid; i < mid + 48; ++i) scan[i] = static_cast<char>(rng() % 0xFF);
  write_bytes(d / "scan.jpg", scan);
  std::string png = encode_bgr(noisy_photo(64, 48), ".png");
  png[png.find("IDAT") + 20] ^= 0x10;  // the stored CRC no longer matches
  write_bytes(d / "crc.png", png);
  write_bytes(d / "dot.jpg", encode_bgr(cv::Mat(1, 1, CV_8UC3, cv::Scalar(0, 0, 255)), ".jpg"));
  write_bytes(d / "damaged.csv",
              "patient_id,left_image,right_image,report\n"
              "G0,good.jpg,good.jpg,r\n"
              "T,truncated.jpg,good.jpg,r\n"
              "M,good.jpg,scan.jpg,r\n"
              "C,crc.png,,r\n"
              "S,,dot.jpg,r\n"
              "G1,good.jpg,,r\n");
  return d;
}

}  // namespace

TEST(Precheck, FailFindsDamagedDataBeforeTheFirstStep) {
  const fs::path d = make_damaged_manifest("damaged");
  auto samples = read_manifest((d / "damaged.csv").string(), BadSamplePolicy::kFail);
  ASSERT_EQ(samples.size(), 6u);
  BadSampleLog log((d / kBadSamplesFile).string());
  PrecheckOptions o;
  o.policy = BadSamplePolicy::kFail;
  o.log = &log;
  try {
    precheck_samples(samples, o);
    FAIL() << "damaged images passed the pre-check under fail";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_HAS(msg, "bad sample at damaged.csv row 3 (left): image " +
                        (d / "truncated.jpg").string() + " is a truncated JPEG");
    EXPECT_HAS(msg, "4 patients have bad images, all listed in " + log.path());
  }
  auto listed = read_bad_sample_log(log.path());
  ASSERT_EQ(listed.size(), 4u);
  EXPECT_EQ(listed[0].patient_id, "T");
  EXPECT_EQ(listed[1].origin, "damaged.csv row 4 (right)");
  EXPECT_HAS(listed[1].reason, "is a damaged JPEG: libjpeg reports 'Corrupt JPEG data");
  EXPECT_HAS(listed[2].reason, "is a damaged PNG: chunk 'IDAT' at byte");
  EXPECT_HAS(listed[2].reason, "fails its CRC check");
  EXPECT_HAS(listed[3].reason, "is too small: 1x1 px, expected at least 16x16");

  // Under skip the default look is at headers only: the 1x1 image is dropped there and
  // the damaged data is left to the loader, which replaces those samples.
  PrecheckReport rep;
  auto kept = precheck_samples(samples, PrecheckOptions{}, &rep);
  EXPECT_EQ(rep.depth, PrecheckDepth::kHeader);
  ASSERT_EQ(rep.bad.size(), 1u);
  EXPECT_EQ(rep.bad[0].patient_id, "S");
  EXPECT_EQ(kept.size(), 5u);
  // Asked for, the data check drops all four under skip too.
  PrecheckOptions deep;
  deep.depth = PrecheckDepth::kData;
  kept = precheck_samples(samples, deep, &rep);
  EXPECT_EQ(rep.depth, PrecheckDepth::kData);
  EXPECT_EQ(rep.bad.size(), 4u);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].patient_id, "G0");
  EXPECT_EQ(kept[1].patient_id, "G1");
}

#endif  // RETCLIP_WITH_IMGCODECS
