// The config's named choices as enums. config::load turns the YAML names into these
// (an unknown name is an error naming the key, the names allowed and the closest one),
// to_yaml writes the names back, and the modules below take the enums, so no layer
// parses the strings again.
//
//   config::Precision p = config::parse<config::Precision>("bf16", "--precision");
//   config::name(p);                          // "bf16"
//   config::names<config::Level>();           // {"auto", "eye", "patient"}
//   config::parse_freeze("first-4-blocks", "finetune.freeze").blocks;   // 4
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace retclip::config {

/// Arithmetic of the forward and backward passes: autocast to bf16 / fp16 on CUDA
/// (fp16 with a loss scaler). kAuto (fine-tuning only) is bf16 on CUDA, fp32 on CPU;
/// it is resolved by model::resolve_precision before a run uses it.
enum class Precision { kAuto, kFp32, kBf16, kFp16 };

/// What happens to a sample that cannot be read or decoded: dropped and listed in
/// bad_samples.tsv (kSkip), or the run stops at the first one (kFail).
enum class BadSamplePolicy { kSkip, kFail };

/// How a photograph becomes a square: kFundusCrop crops the field of view and pads it
/// square with black; kResize squashes the whole photo (the RET-CLIP reference).
enum class Preprocess { kFundusCrop, kResize };

/// Which unit a labelled set, a probe or a classifier scores: one eye image, or a
/// patient (both eyes). kAuto is resolved from the set's columns by data::read_labelled.
enum class Level { kAuto, kEye, kPatient };

/// Which image feature a probe or classifier reads: the pooled token before the
/// projection (kPreProj, timm's head input) or the projected embedding (kPostProj).
enum class Feature { kPreProj, kPostProj };

/// model.vision.activation, the ViT MLP's: QuickGELU (CLIP) or GELU (timm's ViTs:
/// RETFound, DINOv2). kAuto: QuickGELU with model.vision.norm_pre, GELU without.
enum class Activation { kAuto, kQuickGelu, kGelu };

/// model.vision.pool, the ViT's image feature: the class token through the final norm
/// (kToken), the mean of the patch tokens through it (kAvg), or the mean then fc_norm
/// (kAvgFcNorm, RETFound). kAuto: token with a class token, else avg.
enum class Pool { kAuto, kToken, kAvg, kAvgFcNorm };

/// finetune.freeze: nothing, everything but the head, or the patch embedding, position
/// embedding and the first `blocks` ViT blocks.
struct Freeze {
  enum class Kind { kNone, kHeadOnly, kFirstBlocks };
  Kind kind = Kind::kNone;
  int64_t blocks = 0;  ///< kFirstBlocks only, >= 1

  bool operator==(const Freeze& o) const { return kind == o.kind && blocks == o.blocks; }
  bool operator!=(const Freeze& o) const { return !(*this == o); }
};

/// The names of E's values, in declaration order (the table to_yaml and errors use).
template <class E>
const std::vector<std::pair<E, const char*>>& name_table();
template <>
const std::vector<std::pair<Precision, const char*>>& name_table<Precision>();
template <>
const std::vector<std::pair<BadSamplePolicy, const char*>>& name_table<BadSamplePolicy>();
template <>
const std::vector<std::pair<Preprocess, const char*>>& name_table<Preprocess>();
template <>
const std::vector<std::pair<Level, const char*>>& name_table<Level>();
template <>
const std::vector<std::pair<Feature, const char*>>& name_table<Feature>();
template <>
const std::vector<std::pair<Activation, const char*>>& name_table<Activation>();
template <>
const std::vector<std::pair<Pool, const char*>>& name_table<Pool>();

/// The UsageError of a name that is none of `allowed`:
/// "<what>: expected one of a, b, found `s`. HINT: did you mean `a`?".
[[noreturn]] void throw_unknown_name(const std::string& what, const std::string& s,
                                     const std::vector<std::string>& allowed);

template <class E>
const char* name(E e) {
  for (const auto& [v, n] : name_table<E>())
    if (v == e) return n;
  return "?";
}

template <class E>
std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const auto& entry : name_table<E>()) out.emplace_back(entry.second);
  return out;
}

/// Exact match only (names are lower case); false when `s` names no value.
template <class E>
bool from_name(const std::string& s, E& out) {
  for (const auto& [v, n] : name_table<E>())
    if (s == n) return out = v, true;
  return false;
}

/// `s` as an E; throws throw_unknown_name's error, naming `what` (a key or a flag).
template <class E>
E parse(const std::string& s, const std::string& what) {
  E e{};
  if (!from_name(s, e)) throw_unknown_name(what, s, names<E>());
  return e;
}

/// "none" | "head-only" | "first-N-blocks".
std::string name(const Freeze& f);
bool from_name(const std::string& s, Freeze& out);
/// The forms finetune.freeze accepts, for errors: none, head-only, first-N-blocks.
std::vector<std::string> freeze_forms();
Freeze parse_freeze(const std::string& s, const std::string& what);

}  // namespace retclip::config
