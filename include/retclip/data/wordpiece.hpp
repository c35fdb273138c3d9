// BERT WordPiece tokenisation, id-for-id identical to transformers.BertTokenizer
// (BasicTokenizer: clean text, CJK characters as single tokens, lower-case + accent
// stripping, punctuation split; then greedy longest-match-first WordPiece with "##").
// Unicode data comes from compact tables in wordpiece.cpp (see docs/TOKENIZERS.md).
//
//   data::WordPieceTokenizer tok("vocab.txt");
//   tok.tokenize("视盘边界清，C/D 0.3");   // ids without [CLS]/[SEP]
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "retclip/data/tokenizer.hpp"

namespace retclip::data {

/// UTF-8 and the few Unicode properties BERT's BasicTokenizer needs.
namespace unicode {

/// Decodes UTF-8. Every invalid sequence (stray continuation byte, overlong form,
/// surrogate, code point above U+10FFFF, truncated sequence) becomes one U+FFFD.
std::u32string utf8_decode(std::string_view s);
/// Appends the UTF-8 encoding of `c` (U+FFFD for a surrogate or c > U+10FFFF).
void utf8_append(std::string& out, char32_t c);
std::string utf8_encode(std::u32string_view s);

/// ' ', \t, \n, \r or a space separator (Zs).
bool is_whitespace(char32_t c);
/// Categories Cc, Cf, Co, except \t \n \r (which count as whitespace).
bool is_control(char32_t c);
/// ASCII punctuation (33-47, 58-64, 91-96, 123-126) or a Unicode P* category.
bool is_punctuation(char32_t c);
/// The CJK Unified Ideograph blocks of BERT's _is_chinese_char (not kana or Hangul).
bool is_chinese_char(char32_t c);
/// Category Mn (dropped by accent stripping).
bool is_nonspacing_mark(char32_t c);
/// Simple lower-case mapping (U+0130 maps to 'i', its accent being stripped anyway).
char32_t to_lower(char32_t c);
/// NFD of `c` with the Mn marks removed, appended to `out` (nothing for an Mn mark;
/// Hangul syllables become their jamo).
void append_stripped(char32_t c, std::u32string& out);

}  // namespace unicode

/// BERT's BasicTokenizer: the text split into words and single punctuation / CJK
/// characters, each UTF-8 encoded.
class BasicTokenizer {
 public:
  explicit BasicTokenizer(bool lowercase = true, bool tokenize_chinese_chars = true)
      : lowercase_(lowercase), chinese_(tokenize_chinese_chars) {}
  std::vector<std::string> tokenize(std::string_view text) const;
  bool lowercase() const { return lowercase_; }

 private:
  bool lowercase_;
  bool chinese_;
};

/// A vocab.txt tokenizer: one token per line, id = line number (0-based).
class WordPieceTokenizer : public Tokenizer {
 public:
  /// Loads `vocab_path`. Throws UsageError naming the path when it cannot be read or
  /// is empty, and naming the special token ([PAD], [UNK], [CLS], [SEP], [MASK])
  /// missing from it.
  explicit WordPieceTokenizer(const std::string& vocab_path, bool lowercase = true);
  /// From the tokens themselves (id = index); `origin` names them in errors.
  WordPieceTokenizer(std::vector<std::string> vocab, bool lowercase,
                     std::string origin = "<memory>");

  std::vector<int64_t> tokenize(const std::string& text) const override;
  /// The pieces of `text` ("left", "eye", "dr", "##usen", "[UNK]").
  std::vector<std::string> pieces(const std::string& text) const;
  /// The WordPiece ids of one BasicTokenizer word, appended to `ids`: [UNK] alone when
  /// the word has more than max_chars_per_word() code points or cannot be matched.
  void tokenize_word(std::string_view word, std::vector<int64_t>& ids) const;
  /// -1 when absent.
  int64_t token_to_id(std::string_view token) const;

  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  int64_t pad_id() const override { return pad_; }
  int64_t cls_id() const override { return cls_; }
  int64_t sep_id() const override { return sep_; }
  int64_t unk_id() const override { return unk_; }
  int64_t mask_id() const override { return mask_; }
  std::string id_to_piece(int64_t id) const override;
  std::string type() const override { return "wordpiece"; }
  std::string path() const override { return origin_; }
  bool lowercase() const { return basic_.lowercase(); }
  static constexpr int64_t max_chars_per_word() { return 100; }

 private:
  void index_vocab();

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  BasicTokenizer basic_;
  std::string origin_;
  int64_t pad_ = 0, unk_ = 0, cls_ = 0, sep_ = 0, mask_ = 0;
};

}  // namespace retclip::data
