// Packed shards (`retclip pack`): pre-decoded, fundus-cropped, resized uint8 RGB eyes
// plus report, label and (optionally) token ids, in a versioned binary format
// ("RCSHARD1", header, records, index with offset/length/crc32 per record, footer)
// read through a read-only mmap with random access. Layout: docs/SHARDS.md.
//
//   data::ShardReader shards(data::ShardReader::open("shards/"));
//   data::ShardRecordView r = shards.record(17);      // crc32 checked
//   cv::Mat left = r.left_mat();                       // SxSx3 uint8, no copy
//   data::verify_shard_set("shards/");                 // throws naming shard + record
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "retclip/data/image.hpp"
#include "retclip/data/image_check.hpp"
#include "retclip/data/sample.hpp"

namespace retclip::data {

inline constexpr char kShardMagic[9] = "RCSHARD1";     ///< first 8 bytes of every shard
inline constexpr char kShardEndMagic[9] = "RCSHEND1";  ///< last 8 bytes (footer)
inline constexpr uint32_t kShardVersion = 1;

/// What every record of a shard shares.
struct ShardHeader {
  uint32_t version = kShardVersion;
  int64_t image_size = 0;      ///< pixels per side (square images)
  int64_t channels = 3;        ///< RGB
  int64_t record_count = 0;    ///< filled in by the writer / read from the file
  bool has_tokens = false;     ///< records carry context_length token ids
  int64_t context_length = 0;  ///< token ids per record (0 when !has_tokens)
  std::string tokenizer;       ///< "type:file", e.g. "wordpiece:vocab.txt" (see ShardSetInfo)
  bool operator==(const ShardHeader& o) const;
};

/// One record to write. Pixels are image_size*image_size*channels bytes (HWC, RGB);
/// an eye that is absent has no pixels.
struct ShardRecord {
  std::string patient_id;
  bool has_left = false, has_right = false;
  std::vector<uint8_t> left, right;
  std::string report;
  std::vector<int64_t> tokens;  ///< context_length ids (stored as int32) when has_tokens
  /// `key=value` pairs joined by ';' (e.g. "split=train;dr=2"), may be empty; values
  /// are percent-encoded ('%', ';', '=' as %25, %3B, %3D). `retclip pack` stores the
  /// split, the label columns and the per-eye reports (left_report, right_report).
  std::string label;
};

/// A record as read from the mapping: views into the mmap (valid while the reader lives).
struct ShardRecordView {
  std::string_view patient_id, report, label;
  bool has_left = false, has_right = false;
  const uint8_t* left = nullptr;  ///< image_size*image_size*channels bytes or nullptr
  const uint8_t* right = nullptr;
  const uint8_t* tokens_raw = nullptr;  ///< context_length little-endian int32 or nullptr
  int64_t context_length = 0, image_size = 0, channels = 3;

  /// The decoded value of `key` in `label` ("" when absent).
  std::string label_value(std::string_view key) const;
  /// Token ids as int64 (empty when the shard carries none).
  std::vector<int64_t> tokens() const;
  /// Pixels wrapped as a cv::Mat without copying (empty Mat for a missing eye).
  cv::Mat left_mat() const;
  cv::Mat right_mat() const;
};

/// Writes one shard file: records are streamed to `<path>.tmp-<pid>`; finish() appends
/// index and footer, fsyncs and renames onto `path` (a crash never leaves a torn shard
/// under the final name).
class ShardWriter {
 public:
  ShardWriter(std::string path, ShardHeader header);
  ~ShardWriter();  ///< removes the temporary file when finish() was not reached
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  /// Appends a record; throws UsageError when pixel or token sizes do not match the header.
  void add(const ShardRecord& rec);
  /// Writes index + footer, fsyncs, renames. Returns the number of records.
  int64_t finish();
  int64_t size() const { return static_cast<int64_t>(index_.size()); }

 private:
  struct IndexEntry {
    uint64_t offset, length;
    uint32_t crc;
  };
  std::string path_, tmp_path_;
  ShardHeader header_;
  std::FILE* file_ = nullptr;
  uint64_t pos_ = 0;
  std::vector<IndexEntry> index_;
  bool finished_ = false;
};

/// One shard file, memory-mapped read-only (MAP_SHARED). Opening checks magic, version,
/// header checksum, footer and index checksum, so truncated files are rejected.
class ShardFile {
 public:
  static std::shared_ptr<ShardFile> open(const std::string& path);
  ~ShardFile();
  ShardFile(const ShardFile&) = delete;
  ShardFile& operator=(const ShardFile&) = delete;

  const ShardHeader& header() const { return header_; }
  int64_t size() const { return header_.record_count; }
  const std::string& path() const { return path_; }
  /// Record i; with `verify` its crc32 is checked (UsageError naming file and record).
  ShardRecordView record(int64_t i, bool verify = true) const;
  /// Checks every record's crc32; throws UsageError naming the first bad record.
  void verify_all() const;

 private:
  ShardFile() = default;
  std::string path_;
  ShardHeader header_;
  const uint8_t* data_ = nullptr;
  size_t bytes_ = 0;
  const uint8_t* index_ = nullptr;  ///< record_count entries of 20 bytes
};

/// Summary of a shard set (index.json).
struct ShardSetInfo {
  int64_t image_size = 0, channels = 3, records = 0, context_length = 0;
  bool has_tokens = false;
  /// "type:file" of the tokenizer that made the token ids ("" when none). `retclip pack`
  /// keeps a copy of the file beside index.json and records its name, relative to
  /// index.json (resolve_shard_tokenizer finds it).
  std::string tokenizer;
  std::string source_manifest;
  Preprocess preprocess = Preprocess::kFundusCrop;  ///< index.json "preprocess" (older: crop)
  /// index.json "preprocess_version" (absent: 1); ShardReader::open refuses a set whose
  /// version is not kPreprocessVersion.
  int64_t preprocess_version = 1;
  std::vector<std::string> files;                   ///< shard file names, in order
  std::vector<int64_t> records_per_file;
};

/// A shard set: a directory with shard-NNNNN.rcs files and index.json. Random access by
/// global record number across the files. Opening refuses a set packed with another
/// preprocessing version (kPreprocessVersion), saying how to re-pack it.
class ShardReader {
 public:
  /// Opens `dir` (reads index.json, maps every shard). `verify_on_read` checks each
  /// record's crc32 as it is read (cheap compared with augmentation).
  static std::shared_ptr<ShardReader> open(const std::string& dir, bool verify_on_read = true);

  int64_t size() const { return info_.records; }
  const ShardSetInfo& info() const { return info_; }
  int64_t image_size() const { return info_.image_size; }
  ShardRecordView record(int64_t i) const;
  /// Where record i lives, for errors: "shards/shard-00003.rcs record 12".
  std::string describe(int64_t i) const;

 private:
  std::pair<size_t, int64_t> locate(int64_t i) const;
  std::string dir_;
  ShardSetInfo info_;
  bool verify_ = true;
  std::vector<std::shared_ptr<ShardFile>> files_;
  std::vector<int64_t> starts_;  ///< first global record of each file
};

struct VerifyReport {
  int64_t shards = 0, records = 0, bytes = 0;
};
/// Checks index.json against the files and every record checksum. Throws UsageError
/// naming the shard file and record number on the first corruption.
VerifyReport verify_shard_set(const std::string& dir);

/// Name of shard number n inside a set: "shard-00007.rcs".
std::string shard_file_name(int64_t n);

/// A tokenizer recorded by a shard set, found on disk.
struct ShardTokenizer {
  std::string type;  ///< "wordpiece" | "sentencepiece"
  std::string path;  ///< absolute path of the file
};

/// Finds the tokenizer file a shard set records (`recorded`: index.json "tokenizer",
/// "type:file"). A relative file is looked for beside index.json first (where `retclip
/// pack` keeps its copy), then as given (relative to the current directory, as sets
/// packed before the copy recorded it). Returns nullopt when `recorded` is empty. Throws
/// UsageError naming index.json, the recorded file and every place looked, with a
/// hint (data.tokenizer.path), when the file is in none of them.
std::optional<ShardTokenizer> resolve_shard_tokenizer(const std::string& dir,
                                                      const std::string& recorded);

/// File name `retclip pack` gives its copy of a tokenizer of `type` in the shard set:
/// "tokenizer.model" (sentencepiece) or "vocab.txt" (wordpiece).
std::string shard_tokenizer_file_name(const std::string& type);

// ---------------------------------------------------------------------------------
// Packing

struct PackOptions {
  std::string manifest;         ///< source manifest (recorded in index.json)
  std::string format = "auto";  ///< auto | manifest | retclip
  std::string split;            ///< only rows of this split (empty = all)
  std::string out;              ///< output directory
  int64_t image_size = 224;
  Preprocess preprocess = Preprocess::kFundusCrop;  ///< --preprocess
  std::string tokenizer_path;                       ///< empty = no token ids stored
  /// auto (from the file's content: a sentencepiece model is a protobuf, a WordPiece
  /// vocab UTF-8 text), wordpiece or sentencepiece
  std::string tokenizer_type = "auto";
  int64_t context_length = 100;
  int64_t threads = 0;        ///< 0 = cores available
  int64_t shard_size = 1000;  ///< input rows per shard
  BadSamplePolicy on_bad_sample = BadSamplePolicy::kSkip;
  int64_t max_image_pixels = kDefaultMaxImagePixels;  ///< --max-image-pixels (<= 0: none)
  bool progress = true;
};

struct PackReport {
  int64_t records = 0;  ///< records in the set
  int64_t shards = 0;
  int64_t shards_reused = 0;   ///< complete shards kept from an interrupted run
  int64_t bad_samples = 0;     ///< patients skipped in this run
  std::vector<BadSample> bad;  ///< every one of them (file/row + reason), input order
  std::string bad_list;        ///< the bad_samples.tsv listing them (pack_dataset)
  double seconds = 0;
};

/// The steps of packing that need the image and text pipelines, injected so that the
/// shard format can be tested without them. prepare_image returns SxSx3 uint8 RGB
/// (continuous) and throws for a bad image; encode_text may be empty (no tokens).
struct PackHooks {
  std::function<cv::Mat(const ImageRef& ref, const std::string& where)> prepare_image;
  std::function<std::vector<int64_t>(const std::string& text)> encode_text;
  std::string tokenizer_description;  ///< recorded as ShardSetInfo::tokenizer
  std::string tokenizer_digest;       ///< crc32 of the tokenizer file (resume fingerprint)
};

/// Packs `samples` into options.out. Deterministic: shard n holds the (good) samples of
/// input rows [n*shard_size, (n+1)*shard_size) in input order, whatever the thread count.
/// Shards already present that verify and match the options are kept (resume).
PackReport pack_samples(const std::vector<Sample>& samples, const PackOptions& options,
                        const PackHooks& hooks);

/// `retclip pack`: reads the manifest, loads the tokenizer (options.tokenizer_type
/// "auto": inferred from the file), pre-checks every image (precheck_samples; under
/// kFail the compressed data too), decodes + preprocesses in threads, tokenizes, and
/// calls pack_samples. The tokenizer file is copied into the set
/// (shard_tokenizer_file_name) and recorded relative to index.json. Every bad sample
/// is listed in <out>/bad_samples.tsv (PackReport::bad_list). When it throws and
/// options.out did not exist before, the directory is removed again.
PackReport pack_dataset(const PackOptions& options);

}  // namespace retclip::data
