// The unit of data: one patient (left CFP, right CFP — either may be missing —
// and the diagnostic report), as read from a manifest or a RET-CLIP jsonl+tsv pair,
// before decoding. Readers live in manifest.hpp; decoding in image.hpp.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "retclip/config/enums.hpp"

namespace retclip::data {

/// Which eye an image is: a labelled item's (kBoth for a patient-level item, kUnknown
/// where the source does not say) or a synthetic eye's.
enum class Eye { kUnknown, kLeft, kRight, kBoth };
/// "left", "right", "both" or "unknown".
const char* eye_name(Eye e);

/// One eye's image: a file path or the encoded bytes (RET-CLIP tsv), or nothing.
struct ImageRef {
  std::string path;    ///< absolute or relative to the process cwd (readers resolve)
  std::string bytes;   ///< encoded image (JPEG/PNG/...) when read from base64
  std::string origin;  ///< for bytes: where they came from ("train_imgs.tsv row 12 (left)")
  bool present() const { return !path.empty() || !bytes.empty(); }
  /// Where it came from, for error messages ("a.jpg" or "imgs.tsv row 12 (left)").
  std::string describe() const;
};

struct Sample {
  std::string patient_id;
  ImageRef left, right;
  std::string report;                         ///< patient-level report
  std::string left_report, right_report;      ///< optional per-eye reports
  std::string split;                          ///< optional ("train", "val", "test")
  std::map<std::string, std::string> labels;  ///< extra columns (label_*, findings)
  std::string origin;                         ///< "manifest.csv row 17" for errors
};

/// A bad sample found while reading or decoding: what, where, and the policy outcome.
struct BadSample {
  std::string origin;      ///< file and row
  std::string reason;
  std::string patient_id;  ///< when known
};

/// data.on_bad_sample: kFail throws UsageError at the first bad row (file, row, reason);
/// kSkip drops the row, records it in ReadReport::bad and logs a summary. Its names
/// ("skip" | "fail") are config::name / config::parse's.
using BadSamplePolicy = config::BadSamplePolicy;

}  // namespace retclip::data
