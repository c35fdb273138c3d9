// Readers that turn the user's dataset description into data::Sample rows, with the
// bad-input policy (data.on_bad_sample). Two layouts (docs/DATA.md):
//   - native manifest, CSV (RFC 4180) or JSONL: patient_id, left_image, right_image,
//     report [, split, left_report, right_report, label columns...];
//   - RET-CLIP / Chinese-CLIP: <split>_texts.jsonl + <split>_imgs.tsv (base64 images).
//
//   data::ReadReport rep;
//   auto samples = data::read_samples("data/manifest.csv", "auto", "train",
//                                     data::BadSamplePolicy::kSkip, &rep);
//   // rep.rows rows read, rep.samples samples kept, rep.bad what was dropped and why
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "retclip/data/sample.hpp"

namespace retclip::data {

/// What a reader saw. `rows`: data rows read (manifest rows; for the RET-CLIP layout,
/// lines of the texts file). `samples`: samples returned. `bad`: rows dropped under
/// kSkip (file and row, reason).
struct ReadReport {
  int64_t rows = 0;
  int64_t samples = 0;
  std::vector<BadSample> bad;
};

/// Reads a CSV (.csv) or JSONL (.jsonl, .ndjson) manifest. Image paths are resolved
/// against the manifest's folder (absolute paths are kept). Rows are checked (field
/// count, patient_id present and unique, at least one eye, non-empty UTF-8 report);
/// image files are not opened here. File-level problems (missing file, missing
/// required column) always throw UsageError; row problems follow `policy`.
/// "row N" in messages is the 1-based line of the file where the row starts.
std::vector<Sample> read_manifest(const std::string& path, BadSamplePolicy policy,
                                  ReadReport* report = nullptr);

/// Samples whose split equals `split`; all of them when `split` is empty.
std::vector<Sample> filter_split(const std::vector<Sample>& samples, const std::string& split);

/// Reads the RET-CLIP layout: `dir_or_prefix` is a directory holding
/// <split>_texts.jsonl and <split>_imgs.tsv, or a prefix P naming P_texts.jsonl and
/// P_imgs.tsv. Each (patient, text) pair is a Sample whose images are the tsv's
/// decoded bytes (ImageRef::bytes, ImageRef::origin = "<tsv> row N (left)").
std::vector<Sample> read_retclip(const std::string& dir_or_prefix, const std::string& split,
                                 BadSamplePolicy policy, ReadReport* report = nullptr);

/// The layout `path` holds: "retclip" for a directory with <split>_texts.jsonl (or
/// any *_texts.jsonl), a *_texts.jsonl file or a prefix P with P_texts.jsonl;
/// "manifest" for a .csv/.jsonl/.ndjson file. Throws UsageError otherwise.
std::string detect_format(const std::string& path, const std::string& split);

/// Reads either layout. format: "auto" | "manifest" | "retclip". For a manifest,
/// `split` filters rows by the split column (a manifest without a split column is
/// used whole, with a log line saying so).
std::vector<Sample> read_samples(const std::string& path, const std::string& format,
                                 const std::string& split, BadSamplePolicy policy,
                                 ReadReport* report = nullptr);

/// One CSV record: its fields and the 1-based line where it starts.
struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;
  std::string error;  ///< non-empty for a malformed record (e.g. a stray quote)
};
/// RFC 4180 parser: quoted fields with "" escapes, commas and newlines inside quotes,
/// LF or CRLF line ends, a leading UTF-8 BOM. Completely empty lines are skipped.
std::vector<CsvRecord> parse_csv(const std::string& text);

/// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points
/// above U+10FFFF). `bad_offset` receives the offset of the first bad byte.
bool is_valid_utf8(const std::string& s, size_t* bad_offset = nullptr);

}  // namespace retclip::data
