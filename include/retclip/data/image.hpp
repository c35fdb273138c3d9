// Fundus image pipeline (OpenCV): decode, find the circular field of view, crop the
// black border, pad to square, resize (area interpolation); then training
// augmentation and CLIP normalisation into a float tensor.
//
//   cv::Mat rgb = data::decode_image(ref);                 // HxWx3 uint8 RGB
//   cv::Mat sq  = data::fundus_preprocess(rgb, 224);       // 224x224x3 uint8
//   torch::Tensor x = data::to_tensor(sq, aug, rng_seed, mean, std);  // [3,224,224] f32
#pragma once

#include <opencv2/core.hpp>

#include <array>
#include <cstdint>

#include "retclip/data/sample.hpp"

namespace at {
class Tensor;
}

namespace retclip::data {

/// Decodes an ImageRef to 8-bit RGB. Throws UsageError naming ref.describe() for a
/// missing file, a corrupt/truncated image or a non-image file, and when this build
/// has no image decoding (RETCLIP_WITH_IMGCODECS=OFF).
cv::Mat decode_image(const ImageRef& ref);

/// Field of view: centre and radius of the retina disc, in pixels.
struct FieldOfView {
  cv::Rect box;  ///< bounding box of the bright (non-border) region
  bool found = false;
};
FieldOfView find_field_of_view(const cv::Mat& rgb);

/// Crops to the field of view, pads to square with black, resizes to size x size.
/// Throws UsageError when no field of view is found (all-black image).
cv::Mat fundus_preprocess(const cv::Mat& rgb, int64_t size, const std::string& where = "");

struct AugmentParams {
  bool enabled = false;
  std::array<double, 2> crop_scale{0.9, 1.0};
  double color_jitter = 0.2;
  double random_erasing = 0.1;
  bool hflip = false;
};

/// uint8 RGB (size x size) -> normalised float [3,H,W]. Augmentation randomness comes
/// only from `seed` (derive it from (run seed, epoch, sample index, eye)), so a
/// resumed run sees the same pixels.
at::Tensor to_tensor(const cv::Mat& rgb, const AugmentParams& aug, uint64_t seed,
                     const std::array<double, 3>& mean, const std::array<double, 3>& std);

}  // namespace retclip::data
