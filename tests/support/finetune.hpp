// A small labelled set for the fine-tuning tests: `retclip synth`'s patients (48 px images, per-eye
// findings) in one manifest whose split column makes every 5th patient test and the next
// one val, with absolute image paths.
#pragma once

#include <filesystem>
#include <string>

#include "retclip/data/manifest.hpp"
#include "retclip/data/synth.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::test {

inline std::filesystem::path synth_labelled(const std::filesystem::path& root, int64_t patients,
                                            uint64_t seed = 11) {
  data::SynthOptions o;
  o.seed = seed;
  o.patients = patients;
  o.size = 48;
  o.val = 0;
  data::synth_dataset(o, (root / "synth").string());
  auto rows = data::parse_csv(util::read_file(root / "synth" / "train.csv"));
  std::string csv;
  size_t split_col = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    auto f = rows[i].fields;
    if (i == 0) {
      for (size_t k = 0; k < f.size(); ++k)
        if (f[k] == "split") split_col = k;
    } else {
      f[split_col] = i % 5 == 0 ? "test" : i % 5 == 1 ? "val" : "train";
    }
    for (size_t k = 0; k < f.size(); ++k) {
      std::string v = f[k];
      if (i > 0 && (k == 1 || k == 2) && !v.empty()) v = (root / "synth" / v).string();
      csv += (k ? ",\"" : "\"") + v + "\"";
    }
    csv += "\n";
  }
  util::write_file_atomic(root / "labelled.csv", csv);
  return root / "labelled.csv";
}

}  // namespace retclip::test
