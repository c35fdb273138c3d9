// Tests of the checks before decoding: header probes of every format against what
// OpenCV wrote, the pixel limit, file problems (missing, directory, symlink loop, ...),
// and the integrity checks that catch what OpenCV's decoder accepts with a warning.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <unistd.h>

#include "retclip/data/image.hpp"
#include "retclip/data/image_check.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/system.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

namespace {

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("retclip_image_check_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename Fn>
std::string usage_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "<no UsageError>";
}

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg) << "\nwanted: " << (part)

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

/// A PNG chunk with its length and CRC.
std::string png_chunk(const std::string& type, const std::string& data, bool good_crc = true) {
  const uint32_t crc = util::crc32(type + data);
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(good_crc ? crc : crc ^ 1u);
}

/// A PNG whose IHDR says w x h (8-bit RGB) but whose pixel data is a few bytes: enough
/// to tell whether a reader trusts the header before allocating.
std::string png_header_only(uint32_t w, uint32_t h) {
  std::string ihdr = be32(w) + be32(h) + std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1A\n", 8) + png_chunk("IHDR", ihdr) +
         png_chunk("IDAT", std::string("\x78\x9C\x03\x00\x00\x00\x00\x01", 8)) +
         png_chunk("IEND", "");
}

#ifdef RETCLIP_WITH_IMGCODECS
std::string encode(const cv::Mat& bgr, const std::string& ext, std::vector<int> params = {}) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf, params)) << ext;
  return std::string(buf.begin(), buf.end());
}

cv::Mat noise_image(int w, int h) {
  cv::Mat img(h, w, CV_8UC3);
  cv::randu(img, cv::Scalar(0, 0, 0), cv::Scalar(255, 255, 255));
  cv::circle(img, {w / 2, h / 2}, std::min(w, h) / 3, cv::Scalar(40, 90, 200), cv::FILLED);
  return img;
}
#endif

}  // namespace

#ifdef RETCLIP_WITH_IMGCODECS

TEST(ProbeImage, EveryFormatGivesOpenCvsDimensions) {
  const cv::Mat img = noise_image(37, 21);
  std::vector<std::pair<std::string, std::string>> cases = {
      {".jpg", "JPEG"}, {".png", "PNG"}, {".bmp", "BMP"}, {".tiff", "TIFF"}};
  if (cv::haveImageWriter(".webp")) cases.push_back({".webp", "WebP"});
  for (const auto& [ext, format] : cases) {
    const std::string bytes = encode(img, ext);
    ImageInfo info = probe_image(bytes, "x" + ext);
    EXPECT_EQ(info.format, format) << ext;
    EXPECT_EQ(info.width, 37) << ext;
    EXPECT_EQ(info.height, 21) << ext;
    const fs::path p = temp_dir() / ("probe" + ext);
    write_bytes(p, bytes);
    ImageInfo from_file = probe_image_file(p.string(), p.string());
    EXPECT_EQ(from_file.width, 37) << ext;
    EXPECT_EQ(from_file.height, 21) << ext;
  }
  // Lossless WebP has its own header layout.
  if (cv::haveImageWriter(".webp")) {
    ImageInfo info = probe_image(encode(img, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), "l.webp");
    EXPECT_EQ(info.width, 37);
    EXPECT_EQ(info.height, 21);
  }
}

TEST(ProbeImage, JpegWithLargeMetadataBeforeTheFrameHeader) {
  // Camera JPEGs carry EXIF (up to 64 KiB per segment) before SOF: the file probe skips
  // segments by their lengths instead of reading them.
  std::string jpg = encode(noise_image(50, 40), ".jpg");
  std::string app;
  for (int k = 0; k < 3; ++k) {
    const std::string body(65000, static_cast<char>('a' + k));
    const uint32_t len = static_cast<uint32_t>(body.size() + 2);
    app += std::string("\xFF\xE1", 2) + static_cast<char>(len >> 8) +
           static_cast<char>(len & 0xFF) + body;
  }
  jpg.insert(2, app);
  const fs::path p = temp_dir() / "exif.jpg";
  write_bytes(p, jpg);
  ImageInfo info = probe_image_file(p.string(), "exif.jpg");
  EXPECT_EQ(info.width, 50);
  EXPECT_EQ(info.height, 40);
  EXPECT_NO_THROW(decode_image(ImageRef{p.string(), "", ""}));  // still a valid JPEG
}

#endif  // RETCLIP_WITH_IMGCODECS

TEST(ProbeImage, NonImagesAndBrokenHeadersAreNamed) {
  auto msg = usage_error_of([] { probe_image("<html><body>404</body></html>", "eye.jpg"); });
  EXPECT_HAS(msg, "image eye.jpg is not an image (it starts with '<html><body>404<')");
  EXPECT_HAS(msg, "HINT:");
  msg = usage_error_of([] { probe_image("", "empty.png"); });
  EXPECT_HAS(msg, "image empty.png is empty (0 bytes)");
  msg = usage_error_of([] { probe_image(png_header_only(1000, 800).substr(0, 20), "cut.png"); });
  EXPECT_HAS(msg, "image cut.png ends inside its PNG header");
  msg = usage_error_of([] { probe_image(png_header_only(0, 800), "zero.png"); });
  EXPECT_HAS(msg, "zero.png has a broken PNG header: IHDR gives 0 x 800 pixels");
  // A JPEG whose first segment length runs off the end of the data.
  msg = usage_error_of([] { probe_image(std::string("\xFF\xD8\xFF\xE0\x40\x00", 6), "j.jpg"); });
  EXPECT_HAS(msg, "image j.jpg ends inside its JPEG header");
}

TEST(PixelLimit, RefusedFromTheHeaderBeforeDecoding) {
  // The case: a valid-looking 20000 x 20000 PNG. Before, the decoder allocated
  // 1.1 GiB for it (N times with N decode threads) before failing or succeeding.
  const std::string png = png_header_only(20000, 20000);
  const ImageInfo info = probe_image(png, "huge.png");
  EXPECT_EQ(info.pixels(), 400'000'000);
  auto msg = usage_error_of([&] { check_pixel_limit(info, kDefaultMaxImagePixels, "huge.png"); });
  EXPECT_HAS(msg,
             "image huge.png is 20000 x 20000 = 400.0 megapixels, above the limit of 40.0 "
             "megapixels (data.max_image_pixels = 40000000)");
  EXPECT_HAS(msg, "HINT:");
  // The largest fundus camera frames pass; 0 disables the limit.
  EXPECT_NO_THROW(check_pixel_limit({"JPEG", 5000, 4000}, kDefaultMaxImagePixels, "a.jpg"));
  EXPECT_NO_THROW(check_pixel_limit(info, 0, "huge.png"));
#ifdef RETCLIP_WITH_IMGCODECS
  const int64_t rss0 = util::peak_rss_bytes();
  msg = usage_error_of([&] { decode_image(ImageRef{"", png, "train_imgs.tsv row 4 (left)"}); });
  EXPECT_HAS(msg, "image train_imgs.tsv row 4 (left) is 20000 x 20000 = 400.0 megapixels");
  EXPECT_LT(util::peak_rss_bytes() - rss0, 64 << 20) << "decode_image allocated pixel memory";
  // A lower limit from the config applies the same way.
  const cv::Mat img = noise_image(300, 300);
  msg = usage_error_of([&] { decode_image(ImageRef{"", encode(img, ".png"), "p.png"}, 65536); });
  EXPECT_HAS(msg, "300 x 300 = 0.1 megapixels, above the limit of 0.1 megapixels");
#endif
}

TEST(ImageFile, EveryKindOfUnusablePathIsNamed) {
  const fs::path d = temp_dir() / "files";
  fs::create_directories(d);
  EXPECT_HAS(usage_error_of([&] { check_image_file((d / "nope.jpg").string()); }),
             "image file not found: " + (d / "nope.jpg").string());
  EXPECT_HAS(usage_error_of([&] { check_image_file(d.string()); }),
             "expected an image file but " + d.string() + " is a directory");
  write_bytes(d / "empty.jpg", "");
  EXPECT_HAS(usage_error_of([&] { check_image_file((d / "empty.jpg").string()); }),
             "is empty (0 bytes)");
  fs::remove(d / "loop-a.jpg");
  fs::remove(d / "loop-b.jpg");
  fs::create_symlink(d / "loop-b.jpg", d / "loop-a.jpg");
  fs::create_symlink(d / "loop-a.jpg", d / "loop-b.jpg");
  EXPECT_HAS(usage_error_of([&] { check_image_file((d / "loop-a.jpg").string()); }),
             "image file " + (d / "loop-a.jpg").string() + " is a symlink loop");
  fs::remove(d / "dangling.jpg");
  fs::create_symlink(d / "gone.jpg", d / "dangling.jpg");
  EXPECT_HAS(usage_error_of([&] { check_image_file((d / "dangling.jpg").string()); }),
             "is a dangling symlink (its target " + (d / "gone.jpg").string());
  EXPECT_HAS(usage_error_of([] { check_image_file("/dev/null"); }), "is not a regular file");
  write_bytes(d / "locked.jpg", "x");
  fs::permissions(d / "locked.jpg", fs::perms::none);
  if (::geteuid() != 0) {  // root reads anything
    EXPECT_HAS(usage_error_of([&] { check_image_file((d / "locked.jpg").string()); }),
               "cannot be opened: Permission denied");
  }
  fs::permissions(d / "locked.jpg", fs::perms::owner_all);
}

#ifdef RETCLIP_WITH_IMGCODECS

TEST(ImageIntegrity, JpegOverwrittenMidScanIsRefusedThoughOpenCvDecodesIt) {
  // The case: bytes overwritten inside the entropy-coded scan, end marker
  // intact. OpenCV decodes it, printing only libjpeg's "Corrupt JPEG data: ..." on
  // stderr; decode_image must refuse it, naming the image.
  const std::string good = encode(noise_image(256, 192), ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  EXPECT_NO_THROW(check_image_integrity(good, probe_image(good, "good.jpg"), "good.jpg"));
  const size_t sos = good.rfind("\xFF\xDA");
  ASSERT_NE(sos, std::string::npos);
  const size_t mid = sos + (good.size() - sos) / 2;
  int accepted_by_opencv = 0;
  for (uint32_t seed = 1; seed <= 8; ++seed) {
    std::string bad = good;
    std::mt19937 rng(seed);
    for (size_t i = mid; i < mid + 48; ++i) bad[i] = static_cast<char>(rng() % 0xFF);  // no 0xFF
    ASSERT_TRUE(jpeg_is_complete(bad));
    cv::Mat raw(1, static_cast<int>(bad.size()), CV_8U, bad.data());
    if (!cv::imdecode(raw, cv::IMREAD_COLOR).empty()) ++accepted_by_opencv;
    const std::string where = "train_imgs.tsv row " + std::to_string(seed) + " (left)";
    auto msg = usage_error_of([&] { decode_image(ImageRef{"", bad, where}); });
    EXPECT_HAS(msg, "image " + where + " is a damaged JPEG: libjpeg reports 'Corrupt JPEG data");
    EXPECT_HAS(msg, "HINT:");
  }
  EXPECT_GT(accepted_by_opencv, 0)
      << "no damaged file was one OpenCV decodes: the test proves nothing";
  // The same for a file named by its path.
  std::string bad = good;
  for (size_t i = mid; i < mid + 48; ++i) bad[i] = static_cast<char>((i * 37) % 0xFF);
  const fs::path p = temp_dir() / "scan-damaged.jpg";
  write_bytes(p, bad);
  EXPECT_HAS(usage_error_of([&] {
               decode_image(ImageRef{p.string(), "", ""});
             }),
             "image " + p.string() + " is a damaged JPEG");
}

TEST(ImageIntegrity, PngChunkDamageIsRefusedThoughOpenCvDecodesIt) {
  const std::string good = encode(noise_image(40, 30), ".png");
  EXPECT_NO_THROW(check_image_integrity(good, probe_image(good, "good.png"), "good.png"));
  // A text chunk with a wrong CRC after IHDR: libpng only warns ("tEXt: CRC error").
  std::string bad = good;
  bad.insert(33, png_chunk("tEXt", std::string("Comment\0damaged", 15), /*good_crc=*/false));
  cv::Mat raw(1, static_cast<int>(bad.size()), CV_8U, bad.data());
  EXPECT_FALSE(cv::imdecode(raw, cv::IMREAD_COLOR).empty()) << "OpenCV now refuses it itself";
  auto msg = usage_error_of([&] { decode_image(ImageRef{"", bad, "imgs.tsv row 2 (right)"}); });
  EXPECT_HAS(msg,
             "image imgs.tsv row 2 (right) is a damaged PNG: chunk 'tEXt' at byte 33 fails "
             "its CRC check");
  // Missing IEND (cut after the image data) and a flipped pixel byte.
  msg = usage_error_of([&] {
    decode_image(ImageRef{"", good.substr(0, good.size() - 12), "c.png"});
  });
  EXPECT_HAS(msg, "without an IEND chunk");
  std::string flipped = good;
  flipped[good.find("IDAT") + 20] ^= 0x10;
  EXPECT_HAS(usage_error_of([&] {
               decode_image(ImageRef{"", flipped, "f.png"});
             }),
             "chunk 'IDAT' at byte");
}

TEST(ImageIntegrity, RealFundusPhotographsPass) {
  const fs::path dir = fs::path(RETCLIP_SOURCE_DIR) / ".." / "shared" / "data";
  if (!fs::exists(dir)) GTEST_SKIP() << "no shared data at " << dir;
  int n = 0;
  double decode_s = 0, check_s = 0, pixels = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (!e.is_regular_file() || (ext != ".jpg" && ext != ".jpeg" && ext != ".png")) continue;
    const std::string bytes = util::read_file(e.path());
    const ImageInfo info = probe_image(bytes, e.path().string());
    cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
    const auto t0 = std::chrono::steady_clock::now();
    cv::Mat img = cv::imdecode(raw, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
    const auto t1 = std::chrono::steady_clock::now();
    EXPECT_NO_THROW(check_image_integrity(bytes, info, e.path().string())) << e.path();
    const auto t2 = std::chrono::steady_clock::now();
    decode_s += std::chrono::duration<double>(t1 - t0).count();
    check_s += std::chrono::duration<double>(t2 - t1).count();
    pixels += static_cast<double>(info.pixels());
    EXPECT_EQ(info.width, img.cols) << e.path();
    EXPECT_EQ(info.height, img.rows) << e.path();
    if (++n == 24) break;
  }
  EXPECT_GT(n, 0);
  // What the integrity check costs next to the decode it precedes.
  std::printf("%d photographs (%.1f MP on average): OpenCV decode %.1f ms, integrity check %.1f ms "
              "per image\n",
              n, pixels / n / 1e6, 1e3 * decode_s / n, 1e3 * check_s / n);
}

#endif  // RETCLIP_WITH_IMGCODECS
