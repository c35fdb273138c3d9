// Internal to the config module: one table of every key (name, type, pointer into a
// Config) that loading, --set overrides, to_yaml and validation all walk, so that a
// key added to config.hpp needs one line in schema.cpp and nothing else.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"

namespace retclip::config::detail {

enum class Kind {
  kInt, kUInt, kDouble, kBool, kString, kDoubleArray, kStringList, kChoice, kSection
};

/// How a kChoice leaf (an enum of enums.hpp, or Freeze) reads and writes its name.
struct Choice {
  bool (*set)(const std::string& name, void* value);
  std::string (*get)(const void* value);
  std::vector<std::string> (*names)();  ///< the names (forms) an error lists
};

/// One key of the config tree. Leaves point into a Config; sections hold children.
struct Field {
  std::string name;
  Kind kind = Kind::kSection;
  void* ptr = nullptr;
  size_t size = 0;  ///< element count of a kDoubleArray
  const Choice* choice = nullptr;  ///< kChoice only
  /// kChoice: the names this key accepts when fewer than the enum's (train.precision
  /// has no auto); empty = all of choice->names().
  std::vector<std::string> allowed;
  std::vector<Field> children;
};

/// The top-level sections of `cfg`, in declaration order, pointing into `cfg`.
std::vector<Field> schema(Config& cfg);

/// Where each key's value came from: "x.yaml line 7" or "--set optim.lr=1".
using Origins = std::map<std::string, std::string>;

/// validate() with origins, so that range errors name the file and line.
void validate_with(const Config& cfg, const Origins& origins);

/// Levenshtein distance (for "did you mean").
size_t edit_distance(const std::string& a, const std::string& b);

/// The closest of `candidates` to `word`, or "" when none is close enough.
std::string nearest(const std::string& word, const std::vector<std::string>& candidates);

/// Strict scalar parsers: the whole string must be the value.
bool parse_int(const std::string& s, int64_t& out);
bool parse_uint(const std::string& s, uint64_t& out);
bool parse_double(const std::string& s, double& out);
bool parse_bool(const std::string& s, bool& out);

/// Shortest text that reads back as exactly `v` (always with '.' or an exponent).
std::string format_double(double v);

}  // namespace retclip::config::detail
