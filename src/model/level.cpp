// Names of the three contrastive levels.
#include "retclip/model/level.hpp"

#include "retclip/util/error.hpp"

namespace retclip::model {

const char* level_name(Level level) {
  switch (level) {
    case Level::kPatient:
      return "patient";
    case Level::kLeft:
      return "left";
    case Level::kRight:
      return "right";
  }
  return "?";
}

Level parse_level(const std::string& name, const std::string& what) {
  for (Level l : kLevels)
    if (name == level_name(l)) return l;
  throw UsageError(str_cat(what, ": expected patient, left or right but got '", name, "'"));
}

}  // namespace retclip::model
