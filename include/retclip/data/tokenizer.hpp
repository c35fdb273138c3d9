// Tokenizers for reports: BERT WordPiece from a vocab.txt (ids identical to
// transformers.BertTokenizer) and sentencepiece .model files. Both produce the
// reference layout: [CLS] tokens… [SEP] [PAD]… truncated to the context length.
//
//   auto tok = data::load_tokenizer("wordpiece", "vocab.txt");
//   std::vector<int64_t> ids = tok->encode("Left eye: drusen.", 100);  // size 100
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace retclip::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// Token ids of `text` without special tokens.
  virtual std::vector<int64_t> tokenize(const std::string& text) const = 0;
  /// [CLS] + tokenize(text) truncated + [SEP], padded with pad_id() to `context_length`.
  /// Exactly Chinese-CLIP / RET-CLIP `tokenize()`: the tokens are cut to
  /// context_length - 2 and [SEP] is always present. Throws UsageError when
  /// context_length < 2.
  std::vector<int64_t> encode(const std::string& text, int64_t context_length) const;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual int64_t cls_id() const = 0;
  virtual int64_t sep_id() const = 0;
  virtual int64_t unk_id() const = 0;
  virtual int64_t mask_id() const = 0;
  /// The vocabulary entry of `id` ("##ina", "▁drusen", "[CLS]"); throws retclip::Error
  /// for an id outside [0, vocab_size()).
  virtual std::string id_to_piece(int64_t id) const = 0;
  /// "wordpiece" or "sentencepiece".
  virtual std::string type() const = 0;
  /// The file it was loaded from.
  virtual std::string path() const = 0;
};

/// The tokenizer types load_tokenizer() knows, in the order error messages list them:
/// "auto", "wordpiece", "sentencepiece".
const std::vector<std::string>& tokenizer_types();

/// "wordpiece" or "sentencepiece", from what `path` holds: a sentencepiece model is a
/// serialized protobuf (binary, starting with its first piece as field 1), a WordPiece
/// vocab.txt is text with one token per line (no control bytes but tab and line ends,
/// valid UTF-8). Throws UsageError naming the file when it is missing, empty or neither.
std::string detect_tokenizer_type(const std::string& path);

/// `type`: "auto" (detect_tokenizer_type), "wordpiece" (vocab.txt) or "sentencepiece"
/// (.model). An explicit type overrides the detection; when its loader refuses a file
/// that looks like the other type, the message says so. `lowercase` applies
/// to WordPiece (lower-casing plus accent stripping, as BertTokenizer's
/// do_lower_case); a sentencepiece model carries its own normaliser and ignores it.
/// Throws UsageError for an unknown type (listing the valid ones), a missing or
/// unreadable file (naming the path) and a vocabulary without the special tokens.
/// `map_quotes` (data.tokenizer.map_quotes): curly double quotes become '"' first.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& type, const std::string& path,
                                          bool lowercase = true, bool map_quotes = false);

/// `text` with U+201C and U+201D replaced by '"' (Chinese-CLIP's _preprocess_text).
std::string map_curly_quotes(const std::string& text);

/// The report texts of a manifest, for tokenizer training and inspection: a CSV file
/// (header row, RFC 4180 quoting) or a JSONL file (one object per line; ".jsonl" or
/// ".json" extension). Reads the column `column`; when the file has no such column and
/// `column` is "report", the RET-CLIP / Chinese-CLIP "text" column is read instead.
/// Empty cells are skipped. Throws UsageError naming the file (and row) otherwise.
/// A small reader of its own, so that tokenizer training does not depend on the image
/// side of the manifest reader.
std::vector<std::string> read_report_texts(const std::string& manifest_path,
                                           const std::string& column = "report");

}  // namespace retclip::data
