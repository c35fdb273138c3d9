// The pre-check of a dataset before training or packing: every image of every row is
// looked at cheaply (exists, regular file, readable, header names a known format and
// dimensions within data.max_image_pixels), so that a bad row stops a run at its start
// rather than hours in. Decoding errors are still found later, by the loader.
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

struct PrecheckOptions {
  int64_t max_pixels = kDefaultMaxImagePixels;  ///< data.max_image_pixels (<= 0: no limit)
  int64_t threads = 0;  ///< 0 = 4 per available core (the work waits on the file system)
  BadSamplePolicy policy = BadSamplePolicy::kSkip;
  BadSampleLog* log = nullptr;  ///< where every finding is listed (may be null)
};

struct PrecheckReport {
  int64_t images = 0;          ///< distinct images checked
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
