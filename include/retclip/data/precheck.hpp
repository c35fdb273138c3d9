// The pre-check of a dataset before training or packing: every image of every row is
// looked at before the first step, so that a bad row stops a run at its start rather
// than hours in. Cheaply by default (exists, regular file, readable, header names a
// known format, dimensions within data.max_image_pixels and at least 16 px a side);
// under data.on_bad_sample: fail also the compressed data (truncated or damaged JPEG,
// PNG CRCs), which costs about a reduced-size decode per image (docs/PERFORMANCE.md).
//
//   data::PrecheckOptions o;  o.policy = data::BadSamplePolicy::kFail;
//   data::PrecheckReport rep;
//   samples = data::precheck_samples(std::move(samples), o, &rep);  // throws at a bad row
#pragma once

#include <cstdint>
#include <vector>

#include "retclip/data/bad_samples.hpp"
#include "retclip/data/image_check.hpp"
#include "retclip/data/sample.hpp"

namespace retclip::data {

/// How closely each image is looked at.
enum class PrecheckDepth {
  kAuto,    ///< kData under BadSamplePolicy::kFail, kHeader under kSkip (the loader
            ///< replaces what the header check misses)
  kHeader,  ///< the file and its header: a stat, an open and a few small reads per image
  kData,    ///< kHeader plus the whole compressed data, as decode_image checks it
            ///< (check_encoded_image: JPEG entropy-decoded at 1/8 scale with libjpeg's
            ///< warnings as errors, PNG chunk CRCs); TIFF, BMP and WebP are decoded at
            ///< reduced size by OpenCV
};

struct PrecheckOptions {
  int64_t max_pixels = kDefaultMaxImagePixels;  ///< data.max_image_pixels (<= 0: no limit)
  /// 0 = 4 per available core for kHeader (the work waits on the file system), 2 per
  /// core for kData (decoding, overlapped with reading the next file).
  int64_t threads = 0;
  PrecheckDepth depth = PrecheckDepth::kAuto;
  BadSamplePolicy policy = BadSamplePolicy::kSkip;
  BadSampleLog* log = nullptr;  ///< where every finding is listed (may be null)
};

struct PrecheckReport {
  int64_t images = 0;          ///< distinct images checked
  PrecheckDepth depth = PrecheckDepth::kHeader;  ///< the depth used (kAuto resolved)
  int64_t threads = 0;                           ///< threads used
  std::vector<BadSample> bad;  ///< one per dropped patient, in input order
  double seconds = 0;
};

/// Checks the images of `samples` (each distinct image once: in the RET-CLIP layout a
/// patient's images are shared by all its texts). A patient with a bad image is one bad
/// sample, however many texts name it: its first row is reported and every sample of it
/// dropped. kSkip returns the samples that passed; kFail checks every row, lists the
/// findings in options.log, then throws UsageError naming the first bad row (file, row,
/// eye, reason), how many patients are bad and where they are listed.
std::vector<Sample> precheck_samples(std::vector<Sample> samples, const PrecheckOptions& options,
                                     PrecheckReport* report = nullptr);

}  // namespace retclip::data
