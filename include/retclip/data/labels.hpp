// Labelled downstream sets for the probe, zero-shot and fine-tuning: the native manifest
// with label columns, and RETFound's folder layout; with train/val/test splits.
//
//   data::LabelOptions o;  o.path = "odir/labels.csv";  o.classes = {"N","D",...};
//   data::LabelledSet set = data::read_labelled(o);
//   auto train = set.indices("train");   // items of a split
//
// Sources (docs/EVALUATION.md):
//   - manifest (CSV or JSONL; image paths relative to it), patient level, one of
//       `labels`   a flag string in the declared class order ("01000001"; multi-label),
//       `patient_labels`  class names joined by ';' (multi-label; `retclip synth` writes it),
//       `label`    one class name (single-label),
//       one 0/1 column per declared class (multi-label);
//     or eye level: `left_label` / `right_label` (a class name, or a flag string of the
//     declared length), or `left_labels` / `right_labels` (names joined by ';',
//     multi-label), one item per labelled eye.
//   - folder: <root>/{train,val,test}/<class>/<image>; single-label, eye unknown.
// Splits come from a `split` column or the folder names. Without a validation split, a
// stratified one is drawn from train with `seed`; without any split column, train/test
// are drawn the same way when test_fraction > 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "retclip/data/sample.hpp"

namespace retclip::data {

struct LabelledItem {
  std::string id;  ///< patient id (patient level) or "<patient>:left" / folder path
  std::string patient_id;
  Eye eye = Eye::kBoth;
  data::ImageRef left, right;  ///< eye level: the image is in `left` unless eye == kRight
  std::vector<float> target;   ///< [C] 0/1 (single-label: one-hot)
  int64_t label = -1;          ///< single-label: class index
  std::string split;           ///< "train" | "val" | "test"
  std::string origin;          ///< "labels.csv row 7" for messages
  const data::ImageRef& image() const { return eye == Eye::kRight ? right : left; }
};

struct LabelledSet {
  std::string source;                ///< path read
  config::Level level = config::Level::kEye;  ///< kEye | kPatient (never kAuto)
  std::vector<std::string> classes;  ///< class order of target columns
  bool multi_label = false;
  std::vector<LabelledItem> items;
  bool val_drawn = false, test_drawn = false;  ///< splits drawn by read_labelled
  uint64_t split_seed = 0;
  std::vector<data::BadSample> bad;  ///< rows dropped (data.on_bad_sample: skip)
  /// Indices of the items of `split`.
  std::vector<int64_t> indices(const std::string& split) const;
  /// FNV-1a hash (hex) of the sorted ids of `split`: identifies the split in results.
  std::string split_hash(const std::string& split) const;
};

struct LabelOptions {
  std::string path;                  ///< manifest file or folder root
  config::Level level = config::Level::kAuto;  ///< kAuto: patient when a patient label column exists
  std::vector<std::string> classes;  ///< declared class order (required for flag strings)
  double val_fraction = 0.2;         ///< drawn from train when there is no val split
  double test_fraction = 0.0;        ///< drawn from all rows when there is no split at all
  uint64_t seed = 0;                 ///< seed of drawn splits
  bool ignore_split = false;         ///< draw every split anew (a held-out set re-split)
  bool draw_splits = true;           ///< false: leave splits as read (zero-shot needs none)
  data::BadSamplePolicy policy = data::BadSamplePolicy::kFail;
  /// How messages spell the options above: "" names the command-line flags (`--data`,
  /// `--test-fraction 0.3`); a config section ("finetune", "eval.probe") names its keys
  /// (`finetune.data`, `--set finetune.test_fraction=0.3`).
  std::string option_section;
  /// Whether the caller has an option for `ignore_split` (finetune has none).
  bool can_ignore_split = true;
};

/// The caller's spelling of option `key` ("test_fraction") with an example value:
/// "--test-fraction 0.3", or "--set finetune.test_fraction=0.3" for a config section;
/// without a value: "--test-fraction" / "finetune.test_fraction".
std::string label_option(const LabelOptions& options, const std::string& key,
                         const std::string& value = "");

/// Items per split: "train 0, val 398, test 0" (plus "(val drawn)" / "(test drawn)").
std::string split_counts(const LabelledSet& set);

/// Throws a UsageError when one of `needed` ("train", "val", "test") has no item: the
/// message names the set, every split's count, where the splits came from (the split
/// column or a draw) and the option that draws the missing ones. `who` says what needs
/// them ("the probe", "fine-tuning").
void require_splits(const LabelledSet& set, const LabelOptions& options,
                    const std::vector<std::string>& needed, const std::string& who);

LabelledSet read_labelled(const LabelOptions& options);

/// Splits "a,b , c" into trimmed non-empty names.
std::vector<std::string> parse_class_list(const std::string& s);

}  // namespace retclip::data
