// Small pieces the unit tests share: a fresh scratch folder per test and process, and the
// message of the UsageError a call raises.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::test {

/// <tmp>/retclip-<prefix>-<name>-<pid>, emptied and created.
inline std::filesystem::path scratch_dir(const std::string& prefix, const std::string& name) {
  namespace fs = std::filesystem;
  fs::path d =
      fs::temp_directory_path() / ("retclip-" + prefix + "-" + name + "-" + std::to_string(getpid()));
  util::remove_tree(d);
  fs::create_directories(d);
  return d;
}

/// The message of the UsageError `f` throws; "" when it throws none.
inline std::string usage_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace retclip::test
