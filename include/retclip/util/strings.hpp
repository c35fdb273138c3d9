// Small string predicates shared by the readers (key maps, manifests, archives); C++17
// has no std::string::starts_with.
//
//   if (util::starts_with(key, "visual.")) ...
#pragma once

#include <string_view>

namespace retclip::util {

/// Whether `s` begins with `prefix` (an empty prefix always matches).
bool starts_with(std::string_view s, std::string_view prefix);
/// Whether `s` ends with `suffix` (an empty suffix always matches).
bool ends_with(std::string_view s, std::string_view suffix);

}  // namespace retclip::util
