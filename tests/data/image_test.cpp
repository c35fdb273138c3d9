// Tests of the fundus image pipeline: decoding (and every broken-file case),
// field-of-view detection and cropping on synthetic and real photographs, and the
// augmentation / normalisation into tensors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "retclip/data/image.hpp"
#include "retclip/util/error.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::data;

namespace {

const std::array<double, 3> kMean{0.48145466, 0.4578275, 0.40821073};
const std::array<double, 3> kStd{0.26862954, 0.26130258, 0.27577711};

#ifdef RETCLIP_WITH_IMGCODECS
fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("retclip_image_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
#endif

/// A synthetic fundus photo: orange disc on black with a white label in a corner.
/// RGB order.
cv::Mat synthetic_fundus(int w, int h, cv::Point centre, int radius) {
  cv::Mat img(h, w, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(img, centre, radius, cv::Scalar(200, 100, 40), cv::FILLED);
  cv::circle(img, centre + cv::Point(radius / 3, 0), radius / 8, cv::Scalar(250, 220, 120),
             cv::FILLED);
  cv::rectangle(img, cv::Rect(2, 2, 20, 8), cv::Scalar(255, 255, 255), cv::FILLED);
  return img;
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

#ifdef RETCLIP_WITH_IMGCODECS
fs::path shared_data() {
  return fs::path(RETCLIP_SOURCE_DIR) / ".." / "shared" / "data";
}

std::string encode(const cv::Mat& rgb, const std::string& ext) {
  cv::Mat bgr;
  if (rgb.channels() == 3) {
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  } else {
    bgr = rgb;
  }
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr, buf));
  return std::string(buf.begin(), buf.end());
}
#endif

}  // namespace

#ifdef RETCLIP_WITH_IMGCODECS

TEST(DecodeImage, PngJpegBmpTiffGiveRgb) {
  cv::Mat rgb(20, 30, CV_8UC3, cv::Scalar(200, 100, 30));  // R=200 G=100 B=30
  fs::path dir = temp_dir();
  for (const std::string ext : {".png", ".bmp", ".tiff", ".jpg"}) {
    fs::path p = dir / ("img" + ext);
    write_bytes(p, encode(rgb, ext));
    cv::Mat got = decode_image(ImageRef{p.string(), "", ""});
    ASSERT_EQ(got.type(), CV_8UC3) << ext;
    ASSERT_EQ(got.size(), rgb.size()) << ext;
    cv::Vec3b px = got.at<cv::Vec3b>(10, 15);
    const int tol = ext == ".jpg" ? 4 : 0;
    EXPECT_NEAR(px[0], 200, tol) << ext;
    EXPECT_NEAR(px[1], 100, tol) << ext;
    EXPECT_NEAR(px[2], 30, tol) << ext;
  }
}

TEST(DecodeImage, GreyAlphaAndSixteenBit) {
  cv::Mat grey(8, 8, CV_8UC1, cv::Scalar(77));
  cv::Mat g = decode_image(ImageRef{"", encode(grey, ".png"), "grey"});
  ASSERT_EQ(g.type(), CV_8UC3);
  EXPECT_EQ(g.at<cv::Vec3b>(3, 3), cv::Vec3b(77, 77, 77));

  cv::Mat bgra(8, 8, CV_8UC4, cv::Scalar(10, 20, 30, 0));  // fully transparent: alpha dropped
  cv::Mat a = decode_image(ImageRef{"", encode(bgra, ".png"), "alpha"});
  ASSERT_EQ(a.type(), CV_8UC3);
  EXPECT_EQ(a.at<cv::Vec3b>(2, 2), cv::Vec3b(30, 20, 10));

  cv::Mat deep(8, 8, CV_16UC3, cv::Scalar(0, 32896, 65535));  // RGB, 16-bit
  cv::Mat d = decode_image(ImageRef{"", encode(deep, ".png"), "deep"});
  ASSERT_EQ(d.type(), CV_8UC3);
  EXPECT_EQ(d.at<cv::Vec3b>(1, 1), cv::Vec3b(0, 128, 255));
}

TEST(DecodeImage, MissingFileNamesThePath) {
  std::string msg = usage_error_of([] { decode_image(ImageRef{"no/such/eye.jpg", "", ""}); });
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no/such/eye.jpg"), std::string::npos) << msg;
  EXPECT_NE(msg.find("HINT"), std::string::npos) << msg;
}

TEST(DecodeImage, EmptyFile) {
  fs::path p = temp_dir() / "empty.jpg";
  write_bytes(p, "");
  std::string msg = usage_error_of([&] { decode_image(ImageRef{p.string(), "", ""}); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
}

TEST(DecodeImage, TextFileNamedJpg) {
  fs::path p = temp_dir() / "notes.jpg";
  write_bytes(p, "patient 12: left eye normal\n");
  std::string msg = usage_error_of([&] { decode_image(ImageRef{p.string(), "", ""}); });
  EXPECT_NE(msg.find("is not an image"), std::string::npos) << msg;
  EXPECT_NE(msg.find("patient 12"), std::string::npos) << msg;  // shows the first bytes
  EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
}

TEST(DecodeImage, TruncatedJpegIsRejected) {
  cv::Mat img = synthetic_fundus(200, 160, {100, 80}, 70);
  cv::randu(img, cv::Scalar(0, 0, 0), cv::Scalar(255, 255, 255));  // incompressible
  std::string jpg = encode(img, ".jpg");
  ASSERT_TRUE(jpeg_is_complete(jpg));
  EXPECT_NO_THROW(decode_image(ImageRef{"", jpg, "whole.jpg"}));
  for (double keep : {0.9, 0.5, 0.1}) {
    std::string cut = jpg.substr(0, static_cast<size_t>(jpg.size() * keep));
    EXPECT_FALSE(jpeg_is_complete(cut)) << keep;
    fs::path p = temp_dir() / "cut.jpg";
    write_bytes(p, cut);
    std::string msg = usage_error_of([&] { decode_image(ImageRef{p.string(), "", ""}); });
    EXPECT_NE(msg.find("truncated JPEG"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cut.jpg"), std::string::npos) << msg;
  }
  // Bytes from a tsv are named by their origin.
  std::string msg = usage_error_of([&] {
    decode_image(ImageRef{"", jpg.substr(0, 100), "train_imgs.tsv row 3 (left)"});
  });
  EXPECT_NE(msg.find("train_imgs.tsv row 3 (left)"), std::string::npos) << msg;
}

TEST(DecodeImage, CorruptJpegHeaderIsRejected) {
  std::string jpg = encode(synthetic_fundus(64, 64, {32, 32}, 28), ".jpg");
  ASSERT_TRUE(jpeg_is_complete(jpg));
  // Keep the SOI and the end of the file (so the EOI check passes), garble the headers.
  const size_t sos = jpg.rfind("\xFF\xDA");
  ASSERT_NE(sos, std::string::npos);
  for (size_t i = 4; i < sos; ++i) jpg[i] = static_cast<char>(0x5A);
  std::string msg = usage_error_of([&] { decode_image(ImageRef{"", jpg, "garbled.jpg"}); });
  EXPECT_NE(msg.find("garbled.jpg"), std::string::npos) << msg;
}

TEST(DecodeImage, CorruptPngIsRejected) {
  std::string png = encode(synthetic_fundus(64, 64, {32, 32}, 28), ".png");
  std::string cut = png.substr(0, png.size() / 2);
  std::string msg = usage_error_of([&] { decode_image(ImageRef{"", cut, "half.png"}); });
  EXPECT_NE(msg.find("half.png"), std::string::npos) << msg;
}

#else

TEST(DecodeImage, BuildWithoutCodecsSaysSo) {
  std::string msg = usage_error_of([] { decode_image(ImageRef{"a.jpg", "", ""}); });
  EXPECT_NE(msg.find("lacks image decoding"), std::string::npos) << msg;
}

#endif

TEST(FieldOfView, FindsDiscAndIgnoresLabel) {
  cv::Mat img = synthetic_fundus(400, 300, {210, 150}, 120);
  cv::Mat noise(img.size(), CV_8UC3);
  cv::randn(noise, cv::Scalar(3, 3, 3), cv::Scalar(3, 3, 3));  // dark border noise
  img += noise;
  FieldOfView fov = find_field_of_view(img);
  ASSERT_TRUE(fov.found);
  EXPECT_NEAR(fov.box.x, 90, 3);
  EXPECT_NEAR(fov.box.y, 30, 3);
  EXPECT_NEAR(fov.box.width, 241, 4);
  EXPECT_NEAR(fov.box.height, 241, 4);
}

TEST(FieldOfView, DarkCataractImageKeepsItsDisc) {
  cv::Mat img(300, 400, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(img, {200, 150}, 130, cv::Scalar(40, 25, 12), cv::FILLED);  // dim disc
  FieldOfView fov = find_field_of_view(img);
  ASSERT_TRUE(fov.found);
  EXPECT_NEAR(fov.box.width, 261, 4);
  EXPECT_NEAR(fov.box.height, 261, 4);
}

TEST(FieldOfView, AllBlackHasNone) {
  cv::Mat black(200, 300, CV_8UC3, cv::Scalar(0, 0, 0));
  EXPECT_FALSE(find_field_of_view(black).found);
  std::string msg = usage_error_of([&] { fundus_preprocess(black, 224, "p7 left"); });
  EXPECT_NE(msg.find("no field of view"), std::string::npos) << msg;
  EXPECT_NE(msg.find("p7 left"), std::string::npos) << msg;
}

TEST(FundusPreprocess, CropsPadsAndResizes) {
  // Disc cut off at top and bottom (wider than tall): padded to square, centred.
  cv::Mat img(300, 500, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(img, {250, 150}, 180, cv::Scalar(200, 100, 40), cv::FILLED);
  cv::Mat out = fundus_preprocess(img, 128, "wide");
  ASSERT_EQ(out.type(), CV_8UC3);
  ASSERT_EQ(out.rows, 128);
  ASSERT_EQ(out.cols, 128);
  // Box is 361x300: scaled to 128 wide, ~106 tall, ~11 px black bands top and bottom.
  EXPECT_EQ(out.at<cv::Vec3b>(3, 64), cv::Vec3b(0, 0, 0));
  EXPECT_EQ(out.at<cv::Vec3b>(124, 64), cv::Vec3b(0, 0, 0));
  EXPECT_EQ(out.at<cv::Vec3b>(64, 64), cv::Vec3b(200, 100, 40));
  EXPECT_EQ(out.at<cv::Vec3b>(64, 1), cv::Vec3b(200, 100, 40));  // the disc touches the sides
}

TEST(FundusPreprocess, PadsWithBlackWhateverSurroundsTheFieldOfView) {
  // A field of view clipped flat at top and bottom (wider than tall) in a photograph
  // with a white label band above it and a grey one below, apart from the disc: the
  // square is padded above and below, and that padding must be black, not the bands
  // that lie there in the photograph.
  cv::Mat img(400, 400, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(img, {200, 200}, 150, cv::Scalar(200, 100, 40), cv::FILLED);
  img.rowRange(0, 120).setTo(cv::Scalar(0, 0, 0));
  img.rowRange(280, 400).setTo(cv::Scalar(0, 0, 0));
  img.rowRange(40, 110).setTo(cv::Scalar(255, 255, 255));
  img.rowRange(290, 360).setTo(cv::Scalar(128, 128, 128));
  const FieldOfView fov = find_field_of_view(img);
  ASSERT_TRUE(fov.found);
  ASSERT_LT(fov.box.height, fov.box.width - 100) << "the square must be padded by > 50 rows";
  ASSERT_GT(fov.box.y, 60) << "the label band must lie within the padding's reach";
  for (int size : {fov.box.width, 128}) {  // without and with the final resize
    cv::Mat out = fundus_preprocess(img, size, "labelled.jpg");
    ASSERT_EQ(out.rows, size);
    // Rows well inside the top and bottom padding.
    const int pad = (fov.box.width - fov.box.height) / 2 * size / fov.box.width;
    cv::Mat grey;
    cv::cvtColor(out, grey, cv::COLOR_RGB2GRAY);
    EXPECT_EQ(cv::countNonZero(grey.rowRange(0, pad - 2)), 0)
        << "the top padding holds the photograph's label band (size " << size << ")";
    EXPECT_EQ(cv::countNonZero(grey.rowRange(size - pad + 2, size)), 0)
        << "the bottom padding holds the photograph's grey band (size " << size << ")";
    EXPECT_EQ(out.at<cv::Vec3b>(size / 2, size / 2), cv::Vec3b(200, 100, 40));
  }
}

TEST(FundusPreprocess, TooSmallImageAndTinyFov) {
  cv::Mat small(12, 40, CV_8UC3, cv::Scalar(200, 100, 40));
  std::string msg = usage_error_of([&] { fundus_preprocess(small, 224, "thumb.jpg"); });
  EXPECT_NE(msg.find("too small"), std::string::npos) << msg;
  EXPECT_NE(msg.find("thumb.jpg"), std::string::npos) << msg;

  cv::Mat speck(400, 400, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::circle(speck, {200, 200}, 6, cv::Scalar(255, 255, 255), cv::FILLED);
  msg = usage_error_of([&] { fundus_preprocess(speck, 224, "speck.jpg"); });
  EXPECT_NE(msg.find("tiny"), std::string::npos) << msg;
  EXPECT_NE(msg.find("speck.jpg"), std::string::npos) << msg;
}

TEST(FundusPreprocess, SmallerThanTargetIsUpscaled) {
  cv::Mat img = synthetic_fundus(140, 100, {80, 50}, 45);  // label well outside the disc box
  const int64_t before = upscaled_image_count();
  cv::Mat out = fundus_preprocess(img, 224, "small.jpg");
  EXPECT_EQ(out.rows, 224);
  EXPECT_EQ(out.cols, 224);
  EXPECT_EQ(upscaled_image_count(), before + 1);
  cv::Vec3b c = out.at<cv::Vec3b>(112, 60);  // left of the bright spot: plain disc colour
  EXPECT_NEAR(c[0], 200, 3);
  EXPECT_NEAR(c[1], 100, 3);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 0));
}

#ifdef RETCLIP_WITH_IMGCODECS

TEST(RealPhotos, HighResolutionCropIsTight) {
  fs::path dir = shared_data() / "highres";
  if (!fs::exists(dir)) GTEST_SKIP() << "no " << dir;
  // The visible disc of each photo (2734x1822) spans x 540..2195, y 85..1739 (measured
  // with numpy on max(R,G,B) > 30, the burnt-in label excluded): ~1655 px square.
  int n = 0;
  for (const char* name : {"HAY1.jpg", "LZ-OD.jpg", "LZ-OS.jpg", "MAQ-OD.jpg", "MAQ-OS.jpg"}) {
    fs::path p = dir / name;
    auto t0 = std::chrono::steady_clock::now();
    cv::Mat rgb = decode_image(ImageRef{p.string(), "", ""});
    auto t1 = std::chrono::steady_clock::now();
    ASSERT_EQ(rgb.cols, 2734);
    ASSERT_EQ(rgb.rows, 1822);
    FieldOfView fov = find_field_of_view(rgb);
    ASSERT_TRUE(fov.found) << name;
    EXPECT_NEAR(fov.box.x, 540, 25) << name;
    EXPECT_NEAR(fov.box.y, 85, 25) << name;
    EXPECT_NEAR(fov.box.width, 1655, 40) << name;  // within 2.5%
    EXPECT_NEAR(fov.box.height, 1655, 40) << name;
    EXPECT_NEAR(static_cast<double>(fov.box.width) / fov.box.height, 1.0, 0.02) << name;
    cv::Mat out = fundus_preprocess(rgb, 224, p.string());
    auto t2 = std::chrono::steady_clock::now();
    ASSERT_EQ(out.rows, 224);
    // Corners black (outside the disc), centre bright.
    for (cv::Point c :
         {cv::Point(1, 1), cv::Point(222, 1), cv::Point(1, 222), cv::Point(222, 222)}) {
      cv::Vec3b px = out.at<cv::Vec3b>(c);
      EXPECT_LT(px[0] + px[1] + px[2], 30) << name << " corner " << c;
    }
    cv::Vec3b mid = out.at<cv::Vec3b>(112, 112);
    EXPECT_GT(mid[0], 60) << name;
    // The disc touches all four sides of the output: the crop is tight.
    for (cv::Point c :
         {cv::Point(112, 2), cv::Point(112, 221), cv::Point(2, 112), cv::Point(221, 112)}) {
      cv::Vec3b px = out.at<cv::Vec3b>(c);
      EXPECT_GT(px[0], 15) << name << " edge " << c;
    }
    cv::Mat bgr;
    cv::cvtColor(out, bgr, cv::COLOR_RGB2BGR);
    cv::imwrite(
        (fs::temp_directory_path() / (std::string("retclip_fov_") + name + ".png")).string(), bgr);
    std::printf("%s: box %dx%d at (%d,%d); decode %.0f ms, preprocess %.0f ms\n", name,
                fov.box.width, fov.box.height, fov.box.x, fov.box.y,
                std::chrono::duration<double, std::milli>(t1 - t0).count(),
                std::chrono::duration<double, std::milli>(t2 - t1).count());
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST(RealPhotos, OdirSamplePreprocesses) {
  fs::path dir = shared_data() / "odir-sample" / "images";
  if (!fs::exists(dir)) GTEST_SKIP() << "no " << dir;
  int n = 0, min_side = 1 << 30;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".jpg") continue;
    cv::Mat rgb = decode_image(ImageRef{e.path().string(), "", ""});
    // These copies are already cropped near the disc: the box spans most of the image,
    // also for the very dark ones (e.g. 1209_left.jpg, 99th percentile 41).
    FieldOfView fov = find_field_of_view(rgb);
    ASSERT_TRUE(fov.found) << e.path();
    min_side = std::min({min_side, fov.box.width, fov.box.height});
    EXPECT_GE(fov.box.width, rgb.cols * 8 / 10) << e.path();
    EXPECT_GE(fov.box.height, rgb.rows * 8 / 10) << e.path();
    cv::Mat out;
    ASSERT_NO_THROW(out = fundus_preprocess(rgb, 224, e.path().string())) << e.path();
    ASSERT_EQ(out.rows, 224);
    EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 0)) << e.path();
    if (n < 2) {
      cv::Mat bgr;
      cv::cvtColor(out, bgr, cv::COLOR_RGB2BGR);
      cv::imwrite(
          (fs::temp_directory_path() / ("retclip_odir_" + e.path().stem().string() + ".png"))
              .string(),
          bgr);
    }
    ++n;
  }
  EXPECT_EQ(n, 96);
  std::printf("odir-sample: %d images preprocessed to 224x224, smallest FOV side %d px\n", n,
              min_side);
}

#endif

TEST(ToTensor, NormalisationIsExact) {
  cv::Mat img(4, 5, CV_8UC3, cv::Scalar(0, 128, 255));
  at::Tensor t = to_tensor(img, AugmentParams{}, 1, kMean, kStd);
  ASSERT_EQ(t.dim(), 3);
  EXPECT_EQ(t.size(0), 3);
  EXPECT_EQ(t.size(1), 4);
  EXPECT_EQ(t.size(2), 5);
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  // Values from PyTorch: (torch.tensor([0,128,255]).float()/255 - mean)/std in float32.
  const float expected[3] = {-1.7922625541687012f, 0.16889731585979462f, 2.1458969116210938f};
  for (int c = 0; c < 3; ++c) {
    at::Tensor plane = t[c];
    EXPECT_EQ(plane.min().item<float>(), expected[c]) << c;
    EXPECT_EQ(plane.max().item<float>(), expected[c]) << c;
  }
  // Channel order: a pure red pixel is high in channel 0 only.
  cv::Mat red(2, 2, CV_8UC3, cv::Scalar(255, 0, 0));
  at::Tensor r = to_tensor(red, AugmentParams{}, 1, kMean, kStd);
  EXPECT_GT(r[0][0][0].item<float>(), 1.0f);
  EXPECT_LT(r[1][0][0].item<float>(), -1.0f);
}

namespace {
cv::Mat textured(int size) {
  cv::Mat img(size, size, CV_8UC3);
  cv::RNG rng(7);
  rng.fill(img, cv::RNG::UNIFORM, cv::Scalar(20, 20, 20), cv::Scalar(230, 230, 230));
  cv::GaussianBlur(img, img, cv::Size(5, 5), 0);
  return img;
}
}  // namespace

TEST(ToTensor, AugmentationIsDeterministicPerSeed) {
  cv::Mat img = textured(64);
  AugmentParams aug;
  aug.enabled = true;
  aug.random_erasing = 0.5;
  aug.hflip = true;
  at::Tensor a = to_tensor(img, aug, 42, kMean, kStd);
  at::Tensor b = to_tensor(img, aug, 42, kMean, kStd);
  EXPECT_TRUE(at::equal(a, b));
  int differ = 0;
  for (uint64_t s = 1; s <= 5; ++s)
    differ += !at::equal(a, to_tensor(img, aug, 42 + s, kMean, kStd));
  EXPECT_EQ(differ, 5);
}

TEST(ToTensor, DisabledAugmentationIgnoresSeed) {
  cv::Mat img = textured(32);
  AugmentParams off;
  EXPECT_TRUE(at::equal(to_tensor(img, off, 1, kMean, kStd), to_tensor(img, off, 2, kMean, kStd)));
  // Enabled with identity settings (crop scale 1, no jitter, no erasing) = disabled.
  AugmentParams id;
  id.enabled = true;
  id.crop_scale = {1.0, 1.0};
  id.color_jitter = 0;
  id.random_erasing = 0;
  EXPECT_TRUE(at::equal(to_tensor(img, id, 3, kMean, kStd), to_tensor(img, off, 3, kMean, kStd)));
}

TEST(ToTensor, CropJitterAndErasingEachChangePixels) {
  cv::Mat img = textured(64);
  AugmentParams off;
  at::Tensor base = to_tensor(img, off, 0, kMean, kStd);
  AugmentParams crop;
  crop.enabled = true;
  crop.crop_scale = {0.5, 0.6};
  crop.color_jitter = 0;
  crop.random_erasing = 0;
  EXPECT_GT((to_tensor(img, crop, 9, kMean, kStd) - base).abs().max().item<float>(), 0.1f);

  AugmentParams jitter = crop;
  jitter.crop_scale = {1.0, 1.0};
  jitter.color_jitter = 0.4;
  at::Tensor j = to_tensor(img, jitter, 9, kMean, kStd);
  EXPECT_GT((j - base).abs().mean().item<float>(), 0.01f);

  AugmentParams erase = jitter;
  erase.color_jitter = 0;
  erase.random_erasing = 1.0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    at::Tensor e = to_tensor(img, erase, seed, kMean, kStd);
    at::Tensor changed = (e != base).any(0);  // [H,W]
    const double frac = changed.to(at::kFloat).mean().item<double>();
    // torchvision RandomErasing: area 2%..33%; erased pixels are 0 in every channel.
    EXPECT_GE(frac, 0.015) << seed;
    EXPECT_LE(frac, 0.34) << seed;
    EXPECT_TRUE(at::equal(e.masked_select(changed.unsqueeze(0).expand_as(e)),
                          at::zeros({3 * changed.sum().item<int64_t>()})))
        << seed;
  }
}

TEST(ResizePreprocess, SquashesTheWholePhotoWithoutLookingForTheDisc) {
  // A 300x200 frame, black except a small bright patch: fundus_crop refuses it (tiny field
  // of view), resize squashes the whole frame as the reference's Resize((S, S)) does.
  cv::Mat img(200, 300, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::rectangle(img, cv::Rect(10, 10, 8, 8), cv::Scalar(200, 150, 100), cv::FILLED);
  EXPECT_THROW(fundus_preprocess(img, 64, "patch"), retclip::UsageError);
  cv::Mat out = preprocess_image(img, 64, Preprocess::kResize, "patch");
  ASSERT_EQ(out.rows, 64);
  ASSERT_EQ(out.cols, 64);
  cv::Mat want;
  cv::resize(img, want, cv::Size(64, 64), 0, 0, cv::INTER_AREA);
  EXPECT_EQ(cv::norm(out, want, cv::NORM_INF), 0.0);
  // Enlarging is bicubic.
  cv::Mat small = textured(40);
  cv::Mat up = resize_preprocess(small, 64, "small");
  cv::resize(small, want, cv::Size(64, 64), 0, 0, cv::INTER_CUBIC);
  EXPECT_EQ(cv::norm(up, want, cv::NORM_INF), 0.0);
  EXPECT_NE(usage_error_of([] {
              resize_preprocess(cv::Mat(8, 8, CV_8UC3), 64, "icon.png");
            }).find("icon.png"),
            std::string::npos);
}

TEST(ToTensor, LargerSourceIsCroppedThenResizedOnce) {
  cv::Mat src = textured(96);
  // Without augmentation: the source resized (area) to the output size.
  cv::Mat area;
  cv::resize(src, area, cv::Size(64, 64), 0, 0, cv::INTER_AREA);
  AugmentParams off;
  at::Tensor t = to_tensor(src, off, 5, kMean, kStd, 64);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{3, 64, 64}));
  EXPECT_TRUE(at::equal(t, to_tensor(area, off, 5, kMean, kStd)));
  // With a crop of the whole source (scale 1, no jitter/flip/erasing) the one resample is
  // the source -> output resize, bilinear or bicubic as configured.
  AugmentParams whole;
  whole.enabled = true;
  whole.crop_scale = {1.0, 1.0};
  whole.color_jitter = 0;
  whole.random_erasing = 0;
  for (bool bicubic : {false, true}) {
    whole.bicubic = bicubic;
    cv::Mat want;
    cv::resize(src, want, cv::Size(64, 64), 0, 0, bicubic ? cv::INTER_CUBIC : cv::INTER_LINEAR);
    int exact = 0;
    for (uint64_t seed = 0; seed < 8; ++seed)  // the crop is the whole frame for most seeds
      exact += at::equal(to_tensor(src, whole, seed, kMean, kStd, 64),
                         to_tensor(want, off, 0, kMean, kStd));
    EXPECT_GT(exact, 0) << "bicubic " << bicubic;
  }
  // A real crop from the larger source differs from cropping the already-resized square
  // (the double resample this replaces), and is deterministic per seed.
  AugmentParams crop = whole;
  crop.bicubic = false;
  crop.crop_scale = {0.5, 0.6};
  at::Tensor a = to_tensor(src, crop, 11, kMean, kStd, 64);
  EXPECT_TRUE(at::equal(a, to_tensor(src, crop, 11, kMean, kStd, 64)));
  EXPECT_GT((a - to_tensor(area, crop, 11, kMean, kStd)).abs().max().item<float>(), 0.01f);
}

TEST(ToTensor, RandomJitterOrderIsSeededAndChangesTheResult) {
  cv::Mat img = textured(48);
  AugmentParams fixed;
  fixed.enabled = true;
  fixed.crop_scale = {1.0, 1.0};
  fixed.color_jitter = 0.4;
  fixed.random_erasing = 0;
  AugmentParams random = fixed;
  random.random_jitter_order = true;
  int differ = 0, same = 0;
  for (uint64_t seed = 0; seed < 48; ++seed) {
    at::Tensor r = to_tensor(img, random, seed, kMean, kStd);
    EXPECT_TRUE(at::equal(r, to_tensor(img, random, seed, kMean, kStd))) << seed;
    if (at::equal(r, to_tensor(img, fixed, seed, kMean, kStd)))
      ++same;  // the drawn order was brightness, contrast, saturation
    else
      ++differ;
  }
  // One order in six is the fixed one: both outcomes occur over 48 seeds.
  EXPECT_GT(differ, 0);
  EXPECT_GT(same, 0);
}
