// Fundus image pipeline: decode (OpenCV imgcodecs) with strict checks for broken
// files, field-of-view detection and cropping, and the training augmentation +
// CLIP normalisation into a [3,H,W] float tensor.
#include "retclip/data/image.hpp"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>
#ifdef RETCLIP_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>

#include "retclip/data/image_check.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::data {

namespace {

/// Deterministic random numbers for augmentation: splitmix64, whose output is fully
/// specified (std::uniform_real_distribution is not portable bit-for-bit).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [lo, hi).
  double uniform(double lo = 0.0, double hi = 1.0) {
    double u = static_cast<double>(next() >> 11) * 0x1.0p-53;
    return lo + (hi - lo) * u;
  }
  /// Uniform integer in [lo, hi) (hi > lo).
  int randint(int lo, int hi) {
    uint64_t span = static_cast<uint64_t>(hi - lo);
    return lo + static_cast<int>(next() % span);
  }

 private:
  uint64_t state_;
};

std::atomic<int64_t> g_upscaled{0};

/// torchvision RandomResizedCrop.get_params: the crop rectangle.
cv::Rect random_resized_crop_box(int height, int width, const std::array<double, 2>& scale,
                                 Rng& rng) {
  const double area = static_cast<double>(height) * width;
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target_area = area * rng.uniform(scale[0], scale[1]);
    double aspect = std::exp(rng.uniform(log_lo, log_hi));
    int w = static_cast<int>(std::lround(std::sqrt(target_area * aspect)));
    int h = static_cast<int>(std::lround(std::sqrt(target_area / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      int i = rng.randint(0, height - h + 1);
      int j = rng.randint(0, width - w + 1);
      return cv::Rect(j, i, w, h);
    }
  }
  // Fallback to a central crop with the ratio clamped into [3/4, 4/3].
  double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < 3.0 / 4.0) {
    h = static_cast<int>(std::lround(w / (3.0 / 4.0)));
  } else if (in_ratio > 4.0 / 3.0) {
    w = static_cast<int>(std::lround(h * (4.0 / 3.0)));
  }
  return cv::Rect((width - w) / 2, (height - h) / 2, w, h);
}

/// Rec. 601 luma as torchvision's rgb_to_grayscale. Shape: HxWx3 f32 -> HxW f32.
cv::Mat grayscale(const cv::Mat& img) {
  cv::Mat gray(img.size(), CV_32F);
  for (int y = 0; y < img.rows; ++y) {
    const cv::Vec3f* src = img.ptr<cv::Vec3f>(y);
    float* dst = gray.ptr<float>(y);
    for (int x = 0; x < img.cols; ++x) {
      dst[x] = 0.299f * src[x][0] + 0.587f * src[x][1] + 0.114f * src[x][2];
    }
  }
  return gray;
}

/// Colour jitter on float RGB in [0,255]: brightness, contrast, saturation, each a
/// blend as torchvision's adjust_* functions, clamped after each step. The three factors
/// are drawn first (in that order), then applied in the fixed or a random order.
void color_jitter(cv::Mat& img, double j, bool random_order, Rng& rng) {
  const double lo = std::max(0.0, 1.0 - j), hi = 1.0 + j;
  const float factor[3] = {static_cast<float>(rng.uniform(lo, hi)),
                           static_cast<float>(rng.uniform(lo, hi)),
                           static_cast<float>(rng.uniform(lo, hi))};
  int order[3] = {0, 1, 2};
  if (random_order) {  // Fisher-Yates: each of the 6 orders equally likely
    for (int i = 2; i > 0; --i) std::swap(order[i], order[rng.randint(0, i + 1)]);
  }
  auto clamp255 = [](float v) { return std::min(255.0f, std::max(0.0f, v)); };
  for (int op : order) {
    const float f = factor[op];
    if (op == 0) {  // brightness: blend with black
      for (int y = 0; y < img.rows; ++y) {
        cv::Vec3f* p = img.ptr<cv::Vec3f>(y);
        for (int x = 0; x < img.cols; ++x)
          for (int k = 0; k < 3; ++k) p[x][k] = clamp255(p[x][k] * f);
      }
    } else if (op == 1) {  // contrast: blend with the mean grey level of the whole image
      const float mean = static_cast<float>(cv::mean(grayscale(img))[0]);
      for (int y = 0; y < img.rows; ++y) {
        cv::Vec3f* p = img.ptr<cv::Vec3f>(y);
        for (int x = 0; x < img.cols; ++x)
          for (int k = 0; k < 3; ++k) p[x][k] = clamp255(f * p[x][k] + (1.0f - f) * mean);
      }
    } else {  // saturation: blend with the per-pixel grey level
      cv::Mat gray = grayscale(img);
      for (int y = 0; y < img.rows; ++y) {
        cv::Vec3f* p = img.ptr<cv::Vec3f>(y);
        const float* g = gray.ptr<float>(y);
        for (int x = 0; x < img.cols; ++x)
          for (int k = 0; k < 3; ++k) p[x][k] = clamp255(f * p[x][k] + (1.0f - f) * g[x]);
      }
    }
  }
}

}  // namespace

bool jpeg_is_complete(const std::string& b) {
  // Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker,
  // so the last FF DA is the last scan header; the image is complete only when an
  // EOI follows it. An EXIF thumbnail's EOI comes before it and does not count.
  size_t sos = std::string::npos;
  for (size_t i = b.size(); i >= 2; --i) {
    if (static_cast<unsigned char>(b[i - 2]) == 0xFF &&
        static_cast<unsigned char>(b[i - 1]) == 0xDA) {
      sos = i - 2;
      break;
    }
  }
  if (sos == std::string::npos) return false;
  for (size_t i = sos + 2; i + 1 < b.size(); ++i) {
    if (static_cast<unsigned char>(b[i]) == 0xFF && static_cast<unsigned char>(b[i + 1]) == 0xD9)
      return true;
  }
  return false;
}

ImageInfo check_encoded_image(const std::string& bytes, int64_t max_pixels,
                              const std::string& where) {
  // Header first: a non-image or an oversized image is refused before any pixel
  // memory is allocated.
  const ImageInfo info = probe_image(bytes, where);
  check_pixel_limit(info, max_pixels, where);
  if (info.format == "JPEG") {
    RETCLIP_CHECK_USAGE(jpeg_is_complete(bytes), "image ", where, " is a truncated JPEG (",
                        bytes.size(),
                        " bytes, no end-of-image marker after the last scan). HINT: the "
                        "file was cut short (interrupted copy or download); re-fetch it");
  }
  check_image_integrity(bytes, info, where);
  return info;
}

cv::Mat decode_image(const ImageRef& ref, int64_t max_pixels) {
#ifndef RETCLIP_WITH_IMGCODECS
  (void)max_pixels;
  throw UsageError(str_cat("cannot decode ", ref.describe(),
                           ": this build of retclip lacks image decoding (configured with "
                           "RETCLIP_WITH_IMGCODECS=OFF). HINT: rebuild with "
                           "-DRETCLIP_WITH_IMGCODECS=ON, or train from shards made by "
                           "`retclip pack` on a build that has it"));
#else
  const std::string where = ref.describe();
  RETCLIP_CHECK_USAGE(ref.present(), "expected an image but the sample has none (", where,
                      "). HINT: a missing eye must be skipped before decoding");
  std::string file_bytes;
  if (ref.bytes.empty()) {
    check_image_file(ref.path);
    file_bytes = util::read_file(ref.path);
  }
  const std::string& bytes = ref.bytes.empty() ? file_bytes : ref.bytes;
  const ImageInfo info = check_encoded_image(bytes, max_pixels, where);
  cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U,
              const_cast<char*>(bytes.data()));  // imdecode only reads
  cv::Mat img;
  try {
    img = cv::imdecode(raw, cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR);
  } catch (const cv::Exception& e) {
    throw UsageError(str_cat("image ", where, " could not be decoded: ", e.what(),
                             ". HINT: the file is corrupt; re-export it"));
  }
  RETCLIP_CHECK_USAGE(!img.empty(), "image ", where, " is not a decodable ", info.format, " (",
                      bytes.size(), " bytes starting with '", printable_prefix(bytes),
                      "'). HINT: the file is corrupt; re-export it, or fix or remove its row");
  // 16-bit -> 8-bit (full range), float [0,1] -> 8-bit.
  if (img.depth() == CV_16U) {
    img.convertTo(img, CV_8U, 1.0 / 257.0);
  } else if (img.depth() == CV_32F || img.depth() == CV_64F) {
    img.convertTo(img, CV_8U, 255.0);
  } else if (img.depth() != CV_8U) {
    throw UsageError(str_cat("image ", where, " has an unsupported pixel depth (OpenCV depth ",
                             img.depth(), "). HINT: convert it to 8- or 16-bit RGB"));
  }
  cv::Mat rgb;
  switch (img.channels()) {
    case 1:
      cv::cvtColor(img, rgb, cv::COLOR_GRAY2RGB);
      break;
    case 3:
      cv::cvtColor(img, rgb, cv::COLOR_BGR2RGB);
      break;
    case 4:
      cv::cvtColor(img, rgb, cv::COLOR_BGRA2RGB);
      break;
    default:
      throw UsageError(str_cat("image ", where, " has ", img.channels(),
                               " channels; expected 1 (grey), 3 (colour) or 4 (with alpha)"));
  }
  return rgb;
#endif
}

FieldOfView find_field_of_view(const cv::Mat& rgb) {
  FieldOfView fov;
  if (rgb.empty()) return fov;
  RETCLIP_CHECK(rgb.type() == CV_8UC3,
                "find_field_of_view expects 8-bit RGB (CV_8UC3) but got "
                "OpenCV type ",
                rgb.type());
  // Work on a small copy: the box only needs to be accurate to a few pixels.
  const double scale = std::min(1.0, 640.0 / std::max(rgb.rows, rgb.cols));
  cv::Mat small;
  if (scale < 1.0) {
    cv::resize(rgb, small, cv::Size(), scale, scale, cv::INTER_AREA);
  } else {
    small = rgb;
  }
  // Brightness = max of the channels (red dominates fundus photos; yellow cataract
  // images are bright in red and green), smoothed against JPEG noise.
  std::vector<cv::Mat> ch;
  cv::split(small, ch);
  cv::Mat v;
  cv::max(ch[0], ch[1], v);
  cv::max(v, ch[2], v);
  cv::medianBlur(v, v, 5);
  // Threshold relative to the 99th percentile, so dark photos keep their disc.
  int hist[256] = {0};
  for (int y = 0; y < v.rows; ++y) {
    const uchar* p = v.ptr<uchar>(y);
    for (int x = 0; x < v.cols; ++x) ++hist[p[x]];
  }
  const int64_t total = static_cast<int64_t>(v.rows) * v.cols;
  int64_t acc = 0;
  int p99 = 255;
  for (int i = 0; i < 256; ++i) {
    acc += hist[i];
    if (acc >= total * 99 / 100) {
      p99 = i;
      break;
    }
  }
  const double thresh = std::max(10.0, 0.05 * p99);
  cv::Mat mask;
  cv::threshold(v, mask, thresh, 255, cv::THRESH_BINARY);
  cv::Mat labels, stats, centroids;
  int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
  int best = -1, best_area = 0;
  for (int i = 1; i < n; ++i) {
    int a = stats.at<int>(i, cv::CC_STAT_AREA);
    if (a > best_area) {
      best_area = a;
      best = i;
    }
  }
  if (best < 0) return fov;
  const int x0 = stats.at<int>(best, cv::CC_STAT_LEFT);
  const int y0 = stats.at<int>(best, cv::CC_STAT_TOP);
  const int x1 = x0 + stats.at<int>(best, cv::CC_STAT_WIDTH);
  const int y1 = y0 + stats.at<int>(best, cv::CC_STAT_HEIGHT);
  // Back to full resolution, rounding outwards.
  const int fx0 = std::max(0, static_cast<int>(std::floor(x0 / scale)));
  const int fy0 = std::max(0, static_cast<int>(std::floor(y0 / scale)));
  const int fx1 = std::min(rgb.cols, static_cast<int>(std::ceil(x1 / scale)));
  const int fy1 = std::min(rgb.rows, static_cast<int>(std::ceil(y1 / scale)));
  fov.box = cv::Rect(fx0, fy0, fx1 - fx0, fy1 - fy0);
  fov.found = fov.box.width > 0 && fov.box.height > 0;
  return fov;
}

namespace {

// The checks both preprocessings make of their input; returns the name used in errors.
std::string checked_preprocess_input(const cv::Mat& rgb, int64_t size, const std::string& where,
                                     const char* caller) {
  const std::string at = where.empty() ? std::string("image") : where;
  RETCLIP_CHECK_USAGE(size >= 16 && size <= 8192, "expected an output size in [16, 8192] but got ",
                      size, " (", at, ")");
  RETCLIP_CHECK_USAGE(!rgb.empty(), "image ", at, " is empty (0x0 pixels)");
  RETCLIP_CHECK(rgb.type() == CV_8UC3, caller, " expects 8-bit RGB (CV_8UC3) but got OpenCV type ",
                rgb.type(), " (", at, ")");
  check_min_size(ImageInfo{"", rgb.cols, rgb.rows}, at);
  return at;
}

}  // namespace

cv::Mat fundus_preprocess(const cv::Mat& rgb, int64_t size, const std::string& where) {
  const std::string at = checked_preprocess_input(rgb, size, where, "fundus_preprocess");
  FieldOfView fov = find_field_of_view(rgb);
  RETCLIP_CHECK_USAGE(fov.found, "image ", at,
                      " has no field of view: it is black (no pixel brighter than the "
                      "border threshold). HINT: the photograph is blank or failed to "
                      "expose; remove it from the manifest");
  const int min_fov = std::max(16, std::min(rgb.rows, rgb.cols) / 10);
  RETCLIP_CHECK_USAGE(std::min(fov.box.width, fov.box.height) >= min_fov, "image ", at,
                      ": the field of view is tiny (", fov.box.width, "x", fov.box.height,
                      " px in a ", rgb.cols, "x", rgb.rows, " image; expected at least ", min_fov,
                      " px). HINT: the photograph is nearly black or shows only a speck of light");
  cv::Mat crop = rgb(fov.box);
  const int side = std::max(crop.rows, crop.cols);
  const int top = (side - crop.rows) / 2, left = (side - crop.cols) / 2;
  cv::Mat square;
  // `crop` is a view into the photograph: without BORDER_ISOLATED, copyMakeBorder would
  // fill the border from the pixels around the view (labels, light outside the field
  // of view) instead of black.
  cv::copyMakeBorder(crop, square, top, side - crop.rows - top, left, side - crop.cols - left,
                     cv::BORDER_CONSTANT | cv::BORDER_ISOLATED, cv::Scalar(0, 0, 0));
  const int s = static_cast<int>(size);
  cv::Mat out;
  if (side == s) {
    out = square.clone();
  } else if (side > s) {
    cv::resize(square, out, cv::Size(s, s), 0, 0, cv::INTER_AREA);
  } else {
    if (g_upscaled.fetch_add(1) == 0) {
      log::warn(
          "{}: field of view is {}x{} px, smaller than the {} px target; enlarging it "
          "(bicubic). Further enlarged images are counted, not reported.",
          at, fov.box.width, fov.box.height, s);
    }
    cv::resize(square, out, cv::Size(s, s), 0, 0, cv::INTER_CUBIC);
  }
  return out;
}

cv::Mat resize_preprocess(const cv::Mat& rgb, int64_t size, const std::string& where) {
  const std::string at = checked_preprocess_input(rgb, size, where, "resize_preprocess");
  const int s = static_cast<int>(size);
  if (rgb.rows == s && rgb.cols == s) return rgb.clone();
  const bool shrink = rgb.rows >= s && rgb.cols >= s;
  cv::Mat out;
  cv::resize(rgb, out, cv::Size(s, s), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_CUBIC);
  return out;
}

cv::Mat preprocess_image(const cv::Mat& rgb, int64_t size, Preprocess p, const std::string& where) {
  return p == Preprocess::kResize ? resize_preprocess(rgb, size, where)
                                  : fundus_preprocess(rgb, size, where);
}

int64_t upscaled_image_count() {
  return g_upscaled.load();
}

at::Tensor to_tensor(const cv::Mat& rgb, const AugmentParams& aug, uint64_t seed,
                     const std::array<double, 3>& mean, const std::array<double, 3>& std,
                     int64_t out_size) {
  RETCLIP_CHECK(!rgb.empty() && rgb.type() == CV_8UC3,
                "to_tensor expects a non-empty 8-bit RGB image (CV_8UC3) but got OpenCV type ",
                rgb.type(), " of ", rgb.cols, "x", rgb.rows, " px");
  for (int k = 0; k < 3; ++k) {
    RETCLIP_CHECK_USAGE(std[k] > 0, "expected a positive normalisation std but got ", std[k],
                        " for channel ", k, " (key data.std)");
  }
  RETCLIP_CHECK(out_size >= 0 && out_size <= std::min(rgb.rows, rgb.cols),
                "to_tensor: output size ", out_size, " larger than the ", rgb.cols, "x", rgb.rows,
                " px source");
  const int H = out_size > 0 ? static_cast<int>(out_size) : rgb.rows,
            W = out_size > 0 ? static_cast<int>(out_size) : rgb.cols;
  const float m[3] = {static_cast<float>(mean[0]), static_cast<float>(mean[1]),
                      static_cast<float>(mean[2])};
  const float sd[3] = {static_cast<float>(std[0]), static_cast<float>(std[1]),
                       static_cast<float>(std[2])};
  at::Tensor out = at::empty({3, H, W}, at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t plane = static_cast<int64_t>(H) * W;

  if (!aug.enabled) {
    cv::Mat src = rgb;
    if (src.rows != H || src.cols != W) cv::resize(rgb, src, cv::Size(W, H), 0, 0, cv::INTER_AREA);
    // Same arithmetic as ToTensor + Normalize: x/255 in float, then (x - m)/s.
    for (int y = 0; y < H; ++y) {
      const cv::Vec3b* p = src.ptr<cv::Vec3b>(y);
      for (int x = 0; x < W; ++x) {
        for (int k = 0; k < 3; ++k) {
          float v = static_cast<float>(p[x][k]) / 255.0f;
          o[k * plane + static_cast<int64_t>(y) * W + x] = (v - m[k]) / sd[k];
        }
      }
    }
    return out;
  }

  RETCLIP_CHECK_USAGE(
      aug.crop_scale[0] > 0 && aug.crop_scale[0] <= aug.crop_scale[1] && aug.crop_scale[1] <= 1.0,
      "expected 0 < crop_scale[0] <= crop_scale[1] <= 1 but got [", aug.crop_scale[0], ", ",
      aug.crop_scale[1], "] (key data.augment.crop_scale)");
  RETCLIP_CHECK_USAGE(aug.color_jitter >= 0 && aug.random_erasing >= 0 && aug.random_erasing <= 1,
                      "expected color_jitter >= 0 and random_erasing in [0, 1] but got ",
                      aug.color_jitter, " and ", aug.random_erasing, " (key data.augment)");
  Rng rng(seed);
  // Random resized crop of the source, resized to HxW.
  cv::Rect box = random_resized_crop_box(rgb.rows, rgb.cols, aug.crop_scale, rng);
  cv::Mat img8;
  if (box.width == W && box.height == H) {
    img8 = rgb(box);
  } else {
    cv::resize(rgb(box), img8, cv::Size(W, H), 0, 0,
               aug.bicubic ? cv::INTER_CUBIC : cv::INTER_LINEAR);
  }
  if (aug.hflip && rng.uniform() < 0.5) {
    cv::Mat flipped;
    cv::flip(img8, flipped, 1);
    img8 = flipped;
  }
  cv::Mat img;
  img8.convertTo(img, CV_32FC3);
  if (aug.color_jitter > 0) color_jitter(img, aug.color_jitter, aug.random_jitter_order, rng);
  for (int y = 0; y < H; ++y) {
    const cv::Vec3f* p = img.ptr<cv::Vec3f>(y);
    for (int x = 0; x < W; ++x) {
      for (int k = 0; k < 3; ++k) {
        float v = p[x][k] / 255.0f;
        o[k * plane + static_cast<int64_t>(y) * W + x] = (v - m[k]) / sd[k];
      }
    }
  }
  // Random erasing on the normalised tensor (value 0 = the mean colour).
  if (aug.random_erasing > 0 && rng.uniform() < aug.random_erasing) {
    const double area = static_cast<double>(H) * W;
    const double log_lo = std::log(0.3), log_hi = std::log(3.3);
    for (int attempt = 0; attempt < 10; ++attempt) {
      double erase_area = area * rng.uniform(0.02, 0.33);
      double aspect = std::exp(rng.uniform(log_lo, log_hi));
      int h = static_cast<int>(std::lround(std::sqrt(erase_area * aspect)));
      int w = static_cast<int>(std::lround(std::sqrt(erase_area / aspect)));
      if (h < H && w < W && h > 0 && w > 0) {
        int i = rng.randint(0, H - h + 1);
        int j = rng.randint(0, W - w + 1);
        for (int k = 0; k < 3; ++k)
          for (int y = i; y < i + h; ++y)
            std::fill_n(o + k * plane + static_cast<int64_t>(y) * W + j, w, 0.0f);
        break;
      }
    }
  }
  return out;
}

}  // namespace retclip::data
