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

#include "retclip/data/image_check.hpp"
#include "retclip/data/sample.hpp"

namespace at {
class Tensor;
}

namespace retclip::data {

/// Decodes an ImageRef to 8-bit RGB. Before decoding: the file is checked
/// (check_image_file), the header read (probe_image), the pixel count held to
/// `max_pixels` (data.max_image_pixels; <= 0 = no limit) and the compressed data
/// checked (check_image_integrity: a JPEG libjpeg only warns about is an error here).
/// Throws UsageError naming ref.describe() for each of those, for a corrupt/truncated
/// image or a non-image file, and when this build has no image decoding
/// (RETCLIP_WITH_IMGCODECS=OFF).
cv::Mat decode_image(const ImageRef& ref, int64_t max_pixels = kDefaultMaxImagePixels);

/// What decode_image checks before decoding, without decoding: the header
/// (probe_image), the pixel limit (`max_pixels` <= 0: none), for a JPEG an end-of-image
/// marker after the last scan (jpeg_is_complete), and the compressed data
/// (check_image_integrity). Returns what the header says; throws UsageError naming
/// `where`. Needs no image codecs (libjpeg and the PNG chunk walk are used directly).
ImageInfo check_encoded_image(const std::string& bytes, int64_t max_pixels,
                              const std::string& where);

/// Field of view: the bounding box of the retina disc, in pixels. Found by thresholding
/// the smoothed brightness (max of R, G, B) at max(10, 0.05 * its 99th percentile) on a
/// copy at most 640 px wide and keeping the largest connected region, so JPEG noise in
/// the border, burnt-in labels and dark (cataract) photos do not move the box.
struct FieldOfView {
  cv::Rect box;  ///< bounding box of the bright (non-border) region
  bool found = false;
};
FieldOfView find_field_of_view(const cv::Mat& rgb);

/// Crops to the field of view, pads to square with black (centred), resizes to size x
/// size (INTER_AREA when shrinking, INTER_CUBIC when enlarging). Throws UsageError
/// naming `where` when no field of view is found (all-black image), when the image is
/// smaller than 16 px on a side, or when the field of view is tiny (under 16 px or under
/// 10% of the shorter image side). A field of view smaller than `size` is upscaled:
/// allowed, counted (upscaled_image_count) and warned about once per process.
/// Shape: HxWx3 uint8 RGB -> size x size x 3 uint8 RGB.
cv::Mat fundus_preprocess(const cv::Mat& rgb, int64_t size, const std::string& where = "");

/// The whole photograph squashed to size x size, without looking for the field of view:
/// the reference's torchvision Resize((size, size)) (aspect not kept). Shrinking is
/// antialiased (INTER_AREA, as PIL's bicubic filter widens with the scale), enlarging
/// bicubic. Throws UsageError naming `where` for an image under 16 px on a side.
cv::Mat resize_preprocess(const cv::Mat& rgb, int64_t size, const std::string& where = "");

/// data.preprocess: how a decoded photograph becomes the square the loader augments
/// (names "fundus_crop" | "resize", config::name / config::parse's).
using Preprocess = config::Preprocess;

/// Version of the pixels fundus_preprocess / resize_preprocess produce, recorded in a
/// shard set's index.json ("preprocess_version") and in the export sidecar. Raised when
/// their output changes; shard sets of an older version are refused (re-pack them).
///   1: the fundus crop's square was padded with the photograph around the field of view
///   2: the padding is black, whatever surrounds the field of view
inline constexpr int64_t kPreprocessVersion = 2;
/// fundus_preprocess or resize_preprocess.
cv::Mat preprocess_image(const cv::Mat& rgb, int64_t size, Preprocess p,
                         const std::string& where = "");

/// How many fundus_preprocess calls in this process had to enlarge the image.
int64_t upscaled_image_count();

/// True when JPEG data ends properly: an EOI marker (FF D9) follows the last
/// start-of-scan (FF DA). A download cut short fails this check.
bool jpeg_is_complete(const std::string& bytes);

struct AugmentParams {
  bool enabled = false;
  std::array<double, 2> crop_scale{0.9, 1.0};
  double color_jitter = 0.2;
  double random_erasing = 0.1;
  bool hflip = false;
  bool bicubic = false;              ///< resize of the crop: bicubic (else bilinear)
  bool random_jitter_order = false;  ///< brightness/contrast/saturation in a random order
};

/// uint8 RGB (P x P, the source) -> normalised float [3,S,S], S = out_size (0: S = P).
/// Augmentation randomness comes only from `seed` (derive it from (run seed, epoch,
/// sample index, eye)), so a resumed run sees the same pixels: same seed, same input ->
/// bit-identical tensor. With aug.enabled, in order: random resized crop of the source
/// (torchvision RandomResizedCrop: area in crop_scale, aspect 3/4..4/3, resized to SxS
/// bilinear or bicubic; a source larger than S gives the crop real pixels, one resample),
/// optional horizontal flip (p 0.5), colour jitter (brightness, contrast, saturation
/// factors in [1-j, 1+j], in that order or, with random_jitter_order, in a random one as
/// torchvision's ColorJitter), then x/255, (x - mean)/std, then random erasing with
/// probability random_erasing (torchvision RandomErasing: area 0.02..0.33, aspect
/// 0.3..3.3, value 0). Without augmentation a source larger than S is resized (area).
/// Shape: PxPx3 uint8 RGB -> [3,S,S] float32.
at::Tensor to_tensor(const cv::Mat& rgb, const AugmentParams& aug, uint64_t seed,
                     const std::array<double, 3>& mean, const std::array<double, 3>& std,
                     int64_t out_size = 0);

}  // namespace retclip::data
