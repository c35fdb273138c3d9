// Errors with context. RETCLIP_CHECK(cond, parts...) throws retclip::Error whose
// message concatenates the parts; UsageError marks mistakes the user can fix
// (bad config, bad flag, bad input file): `main` maps it to exit code 2.
//
//   RETCLIP_CHECK(n > 0, "expected a positive batch size but got ", n,
//                 " (key train.batch_size). HINT: ...");
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace retclip {

/// Runtime failure (exit code 1).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A mistake in what the user gave us: config, flags, input files (exit code 2).
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& what) : Error(what) {}
};

namespace detail {
inline void str_append(std::ostringstream&) {}
template <typename T, typename... Rest>
void str_append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  str_append(os, rest...);
}
}  // namespace detail

/// Concatenates anything streamable into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::str_append(os, args...);
  return os.str();
}

}  // namespace retclip

#define RETCLIP_CHECK(cond, ...)                                       \
  do {                                                                 \
    if (!(cond)) throw ::retclip::Error(::retclip::str_cat(__VA_ARGS__)); \
  } while (0)

#define RETCLIP_CHECK_USAGE(cond, ...)                                      \
  do {                                                                      \
    if (!(cond)) throw ::retclip::UsageError(::retclip::str_cat(__VA_ARGS__)); \
  } while (0)
