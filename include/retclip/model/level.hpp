// The three levels of RET-CLIP's contrastive problem: the patient (both eyes against the
// report) and each eye against its own report head. Everything that comes in threes
// (embeddings, logit scales, losses, accuracies, recall) is a PerLevel<T> indexed by
// Level, and code loops over kLevels instead of naming three fields.
//
//   for (model::Level l : model::kLevels)
//     log::info("{} loss {:.4f}", model::level_name(l), out.level[l].loss.item<double>());
#pragma once

#include <array>
#include <cstddef>
#include <string>

namespace retclip::model {

enum class Level : int { kPatient = 0, kLeft = 1, kRight = 2 };

inline constexpr std::array<Level, 3> kLevels{Level::kPatient, Level::kLeft, Level::kRight};

/// "patient", "left", "right": the suffix of metric names (train/loss_left, val/r@1_...).
const char* level_name(Level level);

/// The Level named by level_name; UsageError naming `what` (a key or flag) otherwise.
Level parse_level(const std::string& name, const std::string& what);

/// One value per level, indexed by Level (not by an int).
template <typename T>
struct PerLevel {
  std::array<T, 3> values{};

  T& operator[](Level l) { return values[static_cast<size_t>(l)]; }
  const T& operator[](Level l) const { return values[static_cast<size_t>(l)]; }
};

}  // namespace retclip::model
