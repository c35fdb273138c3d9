// The name tables of the config's enums (see enums.hpp) and the error of an unknown name.
#include "retclip/config/enums.hpp"

#include <fmt/format.h>

#include "retclip/util/error.hpp"
#include "schema.hpp"

namespace retclip::config {

template <>
const std::vector<std::pair<Precision, const char*>>& name_table<Precision>() {
  static const std::vector<std::pair<Precision, const char*>> t = {
      {Precision::kAuto, "auto"},
      {Precision::kFp32, "fp32"},
      {Precision::kBf16, "bf16"},
      {Precision::kFp16, "fp16"}};
  return t;
}

template <>
const std::vector<std::pair<BadSamplePolicy, const char*>>& name_table<BadSamplePolicy>() {
  static const std::vector<std::pair<BadSamplePolicy, const char*>> t = {
      {BadSamplePolicy::kSkip, "skip"}, {BadSamplePolicy::kFail, "fail"}};
  return t;
}

template <>
const std::vector<std::pair<Preprocess, const char*>>& name_table<Preprocess>() {
  static const std::vector<std::pair<Preprocess, const char*>> t = {
      {Preprocess::kFundusCrop, "fundus_crop"}, {Preprocess::kResize, "resize"}};
  return t;
}

template <>
const std::vector<std::pair<Level, const char*>>& name_table<Level>() {
  static const std::vector<std::pair<Level, const char*>> t = {
      {Level::kAuto, "auto"}, {Level::kEye, "eye"}, {Level::kPatient, "patient"}};
  return t;
}

template <>
const std::vector<std::pair<Feature, const char*>>& name_table<Feature>() {
  static const std::vector<std::pair<Feature, const char*>> t = {
      {Feature::kPreProj, "pre_proj"}, {Feature::kPostProj, "post_proj"}};
  return t;
}

template <>
const std::vector<std::pair<Activation, const char*>>& name_table<Activation>() {
  static const std::vector<std::pair<Activation, const char*>> t = {
      {Activation::kAuto, "auto"}, {Activation::kQuickGelu, "quick_gelu"}, {Activation::kGelu, "gelu"}};
  return t;
}

template <>
const std::vector<std::pair<Pool, const char*>>& name_table<Pool>() {
  static const std::vector<std::pair<Pool, const char*>> t = {{Pool::kAuto, "auto"},
                                                              {Pool::kToken, "token"},
                                                              {Pool::kAvg, "avg"},
                                                              {Pool::kAvgFcNorm, "avg_fc_norm"}};
  return t;
}

void throw_unknown_name(const std::string& what, const std::string& s,
                        const std::vector<std::string>& allowed) {
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  const std::string guess = detail::nearest(s, allowed);
  throw UsageError(fmt::format("{}: expected one of {}, found `{}`{}", what, list, s,
                               guess.empty() ? "" : fmt::format(". HINT: did you mean `{}`?", guess)));
}

std::string name(const Freeze& f) {
  switch (f.kind) {
    case Freeze::Kind::kNone:
      return "none";
    case Freeze::Kind::kHeadOnly:
      return "head-only";
    case Freeze::Kind::kFirstBlocks:
      return fmt::format("first-{}-blocks", f.blocks);
  }
  return "?";
}

bool from_name(const std::string& s, Freeze& out) {
  if (s == "none") return out = {Freeze::Kind::kNone, 0}, true;
  if (s == "head-only") return out = {Freeze::Kind::kHeadOnly, 0}, true;
  const std::string head = "first-", tail = "-blocks";
  if (s.size() <= head.size() + tail.size() || s.compare(0, head.size(), head) != 0 ||
      s.compare(s.size() - tail.size(), tail.size(), tail) != 0)
    return false;
  int64_t n = 0;
  if (!detail::parse_int(s.substr(head.size(), s.size() - head.size() - tail.size()), n) ||
      n < 1 || s[head.size()] == '+' || s[head.size()] == '-')
    return false;
  out = {Freeze::Kind::kFirstBlocks, n};
  return true;
}

std::vector<std::string> freeze_forms() { return {"none", "head-only", "first-N-blocks"}; }

Freeze parse_freeze(const std::string& s, const std::string& what) {
  Freeze f;
  if (from_name(s, f)) return f;
  throw UsageError(fmt::format(
      "{}: expected none, head-only or first-N-blocks (N >= 1), found `{}`. HINT: e.g. "
      "{}=first-4-blocks freezes the patch embedding and the first 4 ViT blocks",
      what, s, what));
}

}  // namespace retclip::config
