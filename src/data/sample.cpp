// Small helpers of the sample model: how an image reference and an eye describe
// themselves in error messages.
#include "retclip/data/sample.hpp"

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

}  // namespace retclip::data
