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
  std::vector<int64_t> encode(const std::string& text, int64_t context_length) const;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual int64_t cls_id() const = 0;
  virtual int64_t sep_id() const = 0;
  virtual int64_t unk_id() const = 0;
  virtual int64_t mask_id() const = 0;
  /// "wordpiece" or "sentencepiece".
  virtual std::string type() const = 0;
  /// The file it was loaded from.
  virtual std::string path() const = 0;
};

/// `type`: "wordpiece" (vocab.txt) or "sentencepiece" (.model).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& type, const std::string& path,
                                          bool lowercase = true);

}  // namespace retclip::data
