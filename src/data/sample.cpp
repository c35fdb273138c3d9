// Small helpers of the sample model: how an image reference describes itself in
// error messages, and the data.on_bad_sample policy names.
#include "retclip/data/sample.hpp"

#include <algorithm>
#include <cctype>

#include "retclip/util/error.hpp"

namespace retclip::data {

const char* eye_name(Eye e) {
  switch (e) {
    case Eye::kLeft:
      return "left";
    case Eye::kRight:
      return "right";
    case Eye::kBoth:
      return "both";
    default:
      return "unknown";
  }
}

std::string ImageRef::describe() const {
  if (!path.empty()) return path;
  if (!origin.empty()) return origin;
  if (!bytes.empty()) return str_cat("<", bytes.size(), " encoded bytes>");
  return "<no image>";
}

BadSamplePolicy parse_bad_sample_policy(const std::string& s) {
  std::string v = s;
  std::transform(v.begin(), v.end(), v.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (v == "skip") return BadSamplePolicy::kSkip;
  if (v == "fail") return BadSamplePolicy::kFail;
  throw UsageError(str_cat("expected data.on_bad_sample to be 'skip' or 'fail' but got '", s,
                           "'. HINT: 'fail' stops at the first bad row, 'skip' drops bad rows "
                           "and reports them"));
}

const char* bad_sample_policy_name(BadSamplePolicy p) {
  return p == BadSamplePolicy::kSkip ? "skip" : "fail";
}

}  // namespace retclip::data
