// Tests of the synthetic fundus generator: determinism, anatomy (disc on the nasal
// side, black corners), findings visible in the pixels, reports per eye, UTF-8 Chinese,
// and the files of both output layouts.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <ftw.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "retclip/data/synth.hpp"
#include "retclip/util/error.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

namespace {

SynthOptions small_options(uint64_t seed = 7, int size = 96) {
  SynthOptions o;
  o.seed = seed;
  o.size = size;
  o.missing_eye_rate = 0;
  return o;
}

bool same_pixels(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return false;
  if (a.empty()) return true;
  return cv::norm(a, b, cv::NORM_INF) == 0;
}

/// A healthy right eye to vary one finding at a time (same render seed -> same vessels).
EyeFindings healthy_eye(uint64_t render_seed) {
  EyeFindings f;
  f.eye = Eye::kRight;
  f.render_seed = render_seed;
  f.cup_disc_ratio = 0.3;
  return f;
}

/// Brightest disc-sized spot (luma blurred over about a disc radius) inside `roi`.
double disc_score(const cv::Mat& rgb, cv::Rect roi) {
  cv::Mat gray, blurred;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  cv::GaussianBlur(gray, blurred, cv::Size(0, 0), rgb.cols * 0.03);
  double lo = 0, hi = 0;
  cv::minMaxLoc(blurred(roi), &lo, &hi);
  return hi;
}

/// Pixels inside the optic disc region that are as pale as the cup (near white).
int cup_pixels(const cv::Mat& rgb) {
  int n = 0;
  for (int y = 0; y < rgb.rows; ++y)
    for (int x = rgb.cols / 2; x < rgb.cols; ++x) {
      auto p = rgb.at<cv::Vec3b>(y, x);
      if (p[0] >= 235 && p[1] >= 215 && p[2] >= 170) ++n;
    }
  return n;
}

double laplacian_variance(const cv::Mat& rgb) {
  cv::Mat gray, lap;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  cv::Laplacian(gray, lap, CV_64F);
  // Only the central part of the field of view (the FOV border is a strong edge).
  int c = rgb.cols / 2, r = rgb.cols / 4;
  cv::Scalar mean, stddev;
  cv::meanStdDev(lap(cv::Rect(c - r, c - r, 2 * r, 2 * r)), mean, stddev);
  return stddev[0] * stddev[0];
}

/// Small dark spots of the green channel (black-hat, thresholded), as a binary mask.
cv::Mat dark_spots(const cv::Mat& rgb) {
  std::vector<cv::Mat> ch;
  cv::split(rgb, ch);
  cv::Mat bh, bin;
  cv::morphologyEx(ch[1], bh, cv::MORPH_BLACKHAT,
                   cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(9, 9)));
  cv::threshold(bh, bin, 18, 255, cv::THRESH_BINARY);
  return bin;
}

/// Red dots and blots that `rgb` has and its healthy twin (same vessels) lacks: connected
/// dark spots outside the twin's (dilated) vessels whose pixels are red-dominant.
int new_red_blobs(const cv::Mat& rgb, const cv::Mat& healthy) {
  cv::Mat vessels, fresh, labels, stats, centroids;
  cv::dilate(dark_spots(healthy), vessels, cv::Mat(), cv::Point(-1, -1), 1);
  cv::bitwise_and(dark_spots(rgb), ~vessels, fresh);
  int n = cv::connectedComponentsWithStats(fresh, labels, stats, centroids);
  int blobs = 0;
  for (int i = 1; i < n; ++i) {
    if (stats.at<int>(i, cv::CC_STAT_AREA) < 2) continue;
    cv::Scalar m = cv::mean(rgb, labels == i);
    if (m[0] > 1.8 * m[1]) ++blobs;
  }
  return blobs;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (int k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    i += len;
  }
  return true;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) out.push_back(line);
  return out;
}

std::string base64_decode_test(const std::string& s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-' || c == '+') return 62;
    if (c == '_' || c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    int v = val(c);
    EXPECT_GE(v, 0) << "invalid base64 character " << c;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }

/// An empty scratch folder under the build tree. Removal goes through nftw: the
/// std::filesystem::remove_all that libtorch.so exports crashes on non-empty folders.
fs::path scratch_dir(const std::string& name) {
  fs::path d = fs::path(RETCLIP_BINARY_DIR) / "test_scratch" / ("synth_" + name);
  if (::access(d.c_str(), F_OK) == 0) ::nftw(d.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return d;
}

}  // namespace

TEST(Synth, SameSeedSameBytesDifferentSeedDifferent) {
  SynthOptions o = small_options();
  for (int64_t i : {0, 5, 17}) {
    SynthPatient a = synth_patient(o, i), b = synth_patient(o, i);
    EXPECT_TRUE(same_pixels(a.left, b.left));
    EXPECT_TRUE(same_pixels(a.right, b.right));
    EXPECT_EQ(a.report, b.report);
    EXPECT_EQ(a.left_report, b.left_report);
    EXPECT_EQ(a.patient_labels, b.patient_labels);
  }
  SynthPatient a = synth_patient(o, 3), c = synth_patient(small_options(8), 3);
  EXPECT_FALSE(same_pixels(a.left, c.left));
  EXPECT_FALSE(same_pixels(a.right, c.right));
  // Different patients differ too.
  EXPECT_FALSE(same_pixels(synth_patient(o, 1).left, synth_patient(o, 2).left));
}

TEST(Synth, ImagesAreRgbUint8OfTheRequestedSize) {
  for (int size : {64, 96, 224}) {
    SynthPatient p = synth_patient(small_options(1, size), 0);
    ASSERT_EQ(p.left.type(), CV_8UC3);
    EXPECT_EQ(p.left.rows, size);
    EXPECT_EQ(p.right.cols, size);
  }
}

TEST(Synth, OpticDiscOnTheNasalSide) {
  // Right eye: disc on the image's right; left eye: on its left. The brightest disc-sized
  // spot of the band where discs lie must be on the nasal side.
  SynthOptions o = small_options(11, 128);
  for (int64_t i = 0; i < 12; ++i) {
    SynthPatient p = synth_patient(o, i);
    const int s = o.size, w = s / 7, h = s / 5;
    cv::Rect left_win(s / 2 - static_cast<int>(0.55 * 0.46 * s), s / 2 - h / 2, w, h);
    cv::Rect right_win(s / 2 + static_cast<int>(0.55 * 0.46 * s) - w, s / 2 - h / 2, w, h);
    EXPECT_GT(disc_score(p.right, right_win), disc_score(p.right, left_win) + 10) << p.patient_id;
    EXPECT_GT(disc_score(p.left, left_win), disc_score(p.left, right_win) + 10) << p.patient_id;
  }
}

TEST(Synth, BlackOutsideTheFieldOfView) {
  SynthPatient p = synth_patient(small_options(3, 96), 4);
  for (const cv::Mat* m : {&p.left, &p.right}) {
    const int s = m->rows;
    for (cv::Point c : {cv::Point(0, 0), cv::Point(s - 1, 0), cv::Point(0, s - 1),
                        cv::Point(s - 1, s - 1), cv::Point(3, 3), cv::Point(s - 4, s - 4)})
      EXPECT_EQ(m->at<cv::Vec3b>(c), cv::Vec3b(0, 0, 0)) << "at " << c;
    auto centre = m->at<cv::Vec3b>(s / 2, s / 2);
    EXPECT_GT(centre[0], 40);  // the orange-red retina, red channel dominant
    EXPECT_GT(centre[0], centre[2]);
  }
}

TEST(Synth, GlaucomaCupIsLarger) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    EyeFindings normal = healthy_eye(seed), glaucoma = healthy_eye(seed);
    glaucoma.glaucoma = true;
    glaucoma.cup_disc_ratio = 0.8;
    int a = cup_pixels(synth_eye(normal, 128)), b = cup_pixels(synth_eye(glaucoma, 128));
    EXPECT_GT(b, 3 * a) << "cup pixels normal " << a << " glaucoma " << b;
    EXPECT_GT(a, 0);
  }
}

TEST(Synth, CataractIsBlurrier) {
  for (uint64_t seed : {4u, 5u}) {
    EyeFindings clear = healthy_eye(seed), mild = healthy_eye(seed), dense = healthy_eye(seed);
    mild.cataract = 1;
    dense.cataract = 2;
    double vc = laplacian_variance(synth_eye(clear, 128));
    double vm = laplacian_variance(synth_eye(mild, 128));
    double vd = laplacian_variance(synth_eye(dense, 128));
    EXPECT_LT(vm, 0.6 * vc) << vc << " " << vm;
    EXPECT_LT(vd, vm) << vm << " " << vd;
  }
}

TEST(Synth, DiabeticRetinopathyAddsRedDots) {
  for (uint64_t seed : {6u, 7u}) {
    EyeFindings normal = healthy_eye(seed), mild = healthy_eye(seed), moderate = healthy_eye(seed);
    mild.dr_grade = 1;
    mild.dr_amount = Amount::kSeveral;
    moderate.dr_grade = 2;
    moderate.dr_amount = Amount::kMany;
    cv::Mat n = synth_eye(normal, 128);
    int none = new_red_blobs(n, n), a = new_red_blobs(synth_eye(mild, 128), n),
        b = new_red_blobs(synth_eye(moderate, 128), n);
    std::printf("red blobs: normal %d, mild DR (7-12 microaneurysms) %d, moderate DR (many) %d\n",
                none, a, b);
    EXPECT_EQ(none, 0);
    EXPECT_GE(a, 4);
    EXPECT_GE(b, 8);
  }
}

TEST(Synth, DrusenAndExudatesAreYellowSpots) {
  auto yellow = [](const cv::Mat& rgb) {
    int n = 0;
    for (int y = 0; y < rgb.rows; ++y)
      for (int x = 0; x < rgb.cols; ++x) {
        auto p = rgb.at<cv::Vec3b>(y, x);
        if (p[0] > 180 && p[1] > 150 && p[2] < 140 && p[1] > p[0] * 0.75) ++n;
      }
    return n;
  };
  EyeFindings normal = healthy_eye(9), drusen = healthy_eye(9);
  drusen.amd = 1;
  drusen.drusen_amount = Amount::kMany;
  EXPECT_GT(yellow(synth_eye(drusen, 128)), yellow(synth_eye(normal, 128)) + 30);
}

TEST(Synth, HypertensionNarrowsArteries) {
  // Narrowed, straightened arteries leave less vessel (dark) area.
  auto dark = [](const cv::Mat& rgb) {
    std::vector<cv::Mat> ch;
    cv::split(rgb, ch);
    cv::Mat bh;
    cv::morphologyEx(ch[1], bh, cv::MORPH_BLACKHAT,
                     cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(7, 7)));
    return cv::countNonZero(bh > 12);
  };
  EyeFindings normal = healthy_eye(12), ht = healthy_eye(12);
  ht.hypertensive = true;
  EXPECT_LT(dark(synth_eye(ht, 128)), dark(synth_eye(normal, 128)));
}

TEST(Synth, ReportsStateEachEye) {
  SynthOptions o = small_options(5);
  int dr_seen = 0, glaucoma_seen = 0;
  for (int64_t i = 0; i < 200; ++i) {
    PatientFindings f = synth_findings(o, i);
    std::string r = patient_report(f, "en");
    ASSERT_NE(r.find("Left eye: "), std::string::npos) << r;
    ASSERT_NE(r.find("Right eye: "), std::string::npos) << r;
    EXPECT_LT(r.find("Left eye: "), r.find("Right eye: "));
    for (const EyeFindings* e : {&f.left, &f.right}) {
      std::string er = eye_report(*e, "en");
      EXPECT_NE(er.find("cup-to-disc ratio 0."), std::string::npos) << er;
      if (e->dr_grade > 0) {
        EXPECT_NE(er.find("diabetic retinopathy"), std::string::npos) << er;
        ++dr_seen;
      }
      if (e->glaucoma) {
        EXPECT_NE(er.find("laucomatous optic disc cupping"), std::string::npos) << er;
        EXPECT_GE(e->cup_disc_ratio, 0.6);
        ++glaucoma_seen;
      } else {
        EXPECT_LE(e->cup_disc_ratio, 0.4);
      }
      bool healthy = e->dr_grade == 0 && !e->glaucoma && e->amd == 0 && !e->myopia &&
                     !e->hypertensive && e->cataract == 0;
      EXPECT_EQ(healthy, er.rfind("Normal fundus", 0) == 0) << er;
    }
    // DR is bilateral within +-1 grade.
    if (f.left.dr_grade > 0 && f.right.dr_grade > 0) {
      EXPECT_LE(std::abs(f.left.dr_grade - f.right.dr_grade), 2);
    }
    EXPECT_EQ(f.left.myopia, f.right.myopia);
  }
  EXPECT_GT(dr_seen, 40);
  EXPECT_GT(glaucoma_seen, 10);
}

TEST(Synth, ReportsAreDiverse) {
  SynthOptions o = small_options(21);
  std::set<std::string> distinct;
  const int n = 1000;
  for (int64_t i = 0; i < n; ++i) distinct.insert(patient_report(synth_findings(o, i), "en"));
  std::printf("distinct reports: %zu of %d patients\n", distinct.size(), n);
  EXPECT_GT(distinct.size(), static_cast<size_t>(0.7 * n));
}

TEST(Synth, LabelsMatchFindings) {
  EyeFindings f = healthy_eye(1);
  EXPECT_EQ(eye_labels(f), std::vector<std::string>{"normal"});
  f.dr_grade = 2;
  f.glaucoma = true;
  EXPECT_EQ(eye_labels(f), (std::vector<std::string>{"dr2", "glaucoma"}));
  f.present = false;
  EXPECT_TRUE(eye_labels(f).empty());
  EXPECT_EQ(eye_report(f, "en"), "");
}

TEST(Synth, ChineseReportIsValidUtf8) {
  SynthOptions o = small_options(2);
  o.language = "zh";
  for (int64_t i = 0; i < 50; ++i) {
    SynthPatient p = synth_patient(o, i);
    ASSERT_TRUE(valid_utf8(p.report)) << i;
    EXPECT_EQ(p.report.rfind("左眼：", 0), 0u) << p.report;
    EXPECT_NE(p.report.find("右眼："), std::string::npos) << p.report;
    EXPECT_NE(p.report.find("杯盘比0."), std::string::npos) << p.report;
    EXPECT_TRUE(valid_utf8(p.left_report));
  }
  EXPECT_THROW(patient_report(synth_findings(o, 0), "fr"), UsageError);
}

TEST(Synth, MissingEyesNeverBoth) {
  SynthOptions o = small_options(4, 32);
  o.missing_eye_rate = 0.5;
  int missing = 0;
  for (int64_t i = 0; i < 60; ++i) {
    SynthPatient p = synth_patient(o, i);
    EXPECT_FALSE(p.left.empty() && p.right.empty());
    if (p.left.empty() || p.right.empty()) {
      ++missing;
      EXPECT_NE(p.report.find("not imaged"), std::string::npos) << p.report;
    }
  }
  EXPECT_GT(missing, 15);
  EXPECT_LT(missing, 45);
  // The missing-eye draw does not move the other findings.
  SynthOptions none = o;
  none.missing_eye_rate = 0;
  EXPECT_EQ(synth_findings(o, 3).left.dr_grade, synth_findings(none, 3).left.dr_grade);
}

TEST(Synth, ValidationCount) {
  SynthOptions o;
  o.patients = 2000;
  EXPECT_EQ(synth_val_count(o), 200);
  o.patients = 50;
  EXPECT_EQ(synth_val_count(o), 5);
  o.val = 7;
  EXPECT_EQ(synth_val_count(o), 7);
}

#ifdef RETCLIP_WITH_IMGCODECS

TEST(SynthDataset, ManifestFilesAndThreadIndependence) {
  SynthOptions o = small_options(13, 48);
  o.patients = 12;
  o.val = 3;
  o.missing_eye_rate = 0.2;
  o.preview = true;
  fs::path d1 = scratch_dir("m1"), d2 = scratch_dir("m2");
  o.threads = 1;
  SynthSummary s = synth_dataset(o, d1.string());
  EXPECT_EQ(s.train, 9);
  EXPECT_EQ(s.val, 3);
  o.threads = 2;
  synth_dataset(o, d2.string());

  auto train = lines_of(read_text(d1 / "train.csv")), val = lines_of(read_text(d1 / "val.csv"));
  ASSERT_EQ(train.size(), 10u);
  ASSERT_EQ(val.size(), 4u);
  EXPECT_EQ(train[0],
            "patient_id,left_image,right_image,report,left_report,right_report,split,left_labels,"
            "right_labels,patient_labels");
  EXPECT_EQ(train[1].rfind("P000000,images/P000000_", 0), 0u) << train[1];
  EXPECT_NE(val[1].find(",val,"), std::string::npos);
  auto jl = lines_of(read_text(d1 / "all.jsonl"));
  ASSERT_EQ(jl.size(), 12u);
  int images = 0;
  for (const auto& line : jl) {
    auto j = nlohmann::json::parse(line);
    for (const char* key : {"left_image", "right_image"}) {
      std::string rel = j[key];
      if (rel.empty()) continue;
      ++images;
      cv::Mat img = cv::imread((d1 / rel).string());
      ASSERT_FALSE(img.empty()) << rel;
      EXPECT_EQ(img.rows, 48);
      // Same bytes from a different thread count.
      EXPECT_EQ(read_text(d1 / rel), read_text(d2 / rel)) << rel;
    }
    EXPECT_FALSE(std::string(j["report"]).empty());
  }
  EXPECT_GE(images, 12);
  EXPECT_EQ(read_text(d1 / "train.csv"), read_text(d2 / "train.csv"));
  EXPECT_EQ(read_text(d1 / "all.jsonl"), read_text(d2 / "all.jsonl"));
  cv::Mat preview = cv::imread((d1 / "preview.png").string());
  EXPECT_GT(preview.cols, 4 * 2 * 96);
}

TEST(SynthDataset, RetclipFormatParses) {
  SynthOptions o = small_options(14, 40);
  o.patients = 6;
  o.val = 2;
  o.format = "retclip";
  o.image_format = "jpg";
  fs::path d = scratch_dir("rc");
  synth_dataset(o, d.string());
  for (const char* split : {"train", "valid"}) {
    auto texts = lines_of(read_text(d / (std::string(split) + "_texts.jsonl")));
    auto tsv = lines_of(read_text(d / (std::string(split) + "_imgs.tsv")));
    size_t want = std::string(split) == "train" ? 4 : 2;
    ASSERT_EQ(texts.size(), want);
    ASSERT_EQ(tsv.size(), want);
    for (size_t i = 0; i < want; ++i) {
      auto j = nlohmann::json::parse(texts[i]);
      EXPECT_EQ(j["text_id"].get<int64_t>(), static_cast<int64_t>(i));
      EXPECT_NE(j["text"].get<std::string>().find("Left eye"), std::string::npos);
      std::string pid = j["image_ids"][0];
      std::stringstream row(tsv[i]);
      std::string id, l, r;
      std::getline(row, id, '\t');
      std::getline(row, l, '\t');
      std::getline(row, r, '\t');
      EXPECT_EQ(id, pid);
      for (const std::string* b64 : {&l, &r}) {
        EXPECT_EQ(b64->find_first_of("+/"), std::string::npos);  // urlsafe alphabet
        std::string bytes = base64_decode_test(*b64);
        cv::Mat img = cv::imdecode(std::vector<uchar>(bytes.begin(), bytes.end()), cv::IMREAD_COLOR);
        ASSERT_FALSE(img.empty());
        EXPECT_EQ(img.cols, 40);
      }
    }
  }
}

TEST(SynthDataset, BadOptionsAreUsageErrors) {
  SynthOptions o = small_options();
  o.patients = 3;
  o.val = 3;
  EXPECT_THROW(synth_dataset(o, scratch_dir("bad").string()), UsageError);
  o.val = 0;
  o.format = "tar";
  EXPECT_THROW(synth_dataset(o, scratch_dir("bad").string()), UsageError);
}

TEST(SynthDataset, PreviewSheetForHumans) {
  // Writes a contact sheet to the build folder for a human look (docs/SYNTH.md).
  SynthOptions o = small_options(7, 128);
  std::vector<SynthPatient> ps;
  for (int64_t i = 0; i < 16; ++i) ps.push_back(synth_patient(o, i));
  cv::Mat sheet = synth_preview(ps), bgr;
  EXPECT_EQ(sheet.type(), CV_8UC3);
  cv::cvtColor(sheet, bgr, cv::COLOR_RGB2BGR);
  fs::create_directories(fs::path(RETCLIP_BINARY_DIR) / "test_scratch");
  EXPECT_TRUE(cv::imwrite((fs::path(RETCLIP_BINARY_DIR) / "test_scratch" / "synth_preview.png").string(), bgr));
}

#endif  // RETCLIP_WITH_IMGCODECS

TEST(SynthSpeed, ManyPatientsPerSecond) {
  // CPU time, not wall time: the rate must hold on a busy machine too.
  SynthOptions o = small_options(1, 128);
  std::clock_t c0 = std::clock();
  auto t0 = std::chrono::steady_clock::now();
  const int n = 40;
  for (int64_t i = 0; i < n; ++i) synth_patient(o, i);
  double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("synth_patient at 128 px: %.1f patients/s of CPU time (%.1f patients/s wall)\n",
              n / cpu, n / wall);
  EXPECT_GT(n / cpu, 20.0);
}
