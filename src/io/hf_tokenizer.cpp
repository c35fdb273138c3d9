// Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json) that reproduce
// retclip's sentencepiece and WordPiece ids, and a small reader of sentencepiece's
// ModelProto wire format (only the fields encoding depends on).
#include "retclip/io/hf_tokenizer.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// --- protobuf wire format ------------------------------------------------------------

// One message's bytes; fields are read in order, unknown ones skipped.
class WireReader {
 public:
  WireReader(const std::string& bytes, size_t begin, size_t end, const std::string& where)
      : b_(bytes), pos_(begin), end_(end), where_(where) {}

  bool done() const { return pos_ >= end_; }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      check(pos_ < end_, "a varint runs past the end of its message");
      const auto byte = static_cast<uint8_t>(b_[pos_++]);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
    fail("a varint is longer than 10 bytes");
    return 0;
  }

  // Reads a field key; returns the field number and sets `wire`.
  uint32_t key(int* wire) {
    const uint64_t k = varint();
    *wire = static_cast<int>(k & 7);
    return static_cast<uint32_t>(k >> 3);
  }

  // A length-delimited field: [begin, end) of its bytes.
  std::pair<size_t, size_t> span() {
    const uint64_t n = varint();
    check(n <= end_ - pos_, "a length-delimited field runs past the end of its message");
    const size_t begin = pos_;
    pos_ += static_cast<size_t>(n);
    return {begin, pos_};
  }

  std::string bytes() {
    auto [b, e] = span();
    return b_.substr(b, e - b);
  }

  float fixed32_float() {
    check(end_ - pos_ >= 4, "a 32-bit field runs past the end of its message");
    uint32_t u = 0;
    for (int i = 0; i < 4; ++i) u |= static_cast<uint32_t>(static_cast<uint8_t>(b_[pos_ + i])) << (8 * i);
    pos_ += 4;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }

  void skip(int wire) {
    switch (wire) {
      case 0:
        varint();
        break;
      case 1:
        check(end_ - pos_ >= 8, "a 64-bit field runs past the end of its message");
        pos_ += 8;
        break;
      case 2:
        span();
        break;
      case 5:
        check(end_ - pos_ >= 4, "a 32-bit field runs past the end of its message");
        pos_ += 4;
        break;
      default:
        fail("wire type " + std::to_string(wire) + " is not one protobuf writes");
    }
  }

  void expect(int wire, int want, const char* field) {
    check(wire == want, std::string("field ") + field + " has wire type " + std::to_string(wire) +
                            ", expected " + std::to_string(want));
  }

 private:
  void check(bool ok, const std::string& what) {
    if (!ok) fail(what);
  }
  [[noreturn]] void fail(const std::string& what) {
    throw UsageError(str_cat(where_, ": not a sentencepiece model (byte ", pos_, ": ", what,
                             "). HINT: pass the .model file written by `retclip tokenizer "
                             "train --type sentencepiece` or spm_train"));
  }

  const std::string& b_;
  size_t pos_, end_;
  std::string where_;
};

SentencePieceModelSpec::Piece read_piece(WireReader r) {
  SentencePieceModelSpec::Piece p;
  while (!r.done()) {
    int wire = 0;
    const uint32_t f = r.key(&wire);
    if (f == 1) {
      r.expect(wire, 2, "SentencePiece.piece");
      p.piece = r.bytes();
    } else if (f == 2) {
      r.expect(wire, 5, "SentencePiece.score");
      p.score = r.fixed32_float();
    } else if (f == 3) {
      r.expect(wire, 0, "SentencePiece.type");
      p.type = static_cast<int>(r.varint());
    } else {
      r.skip(wire);
    }
  }
  return p;
}

void read_trainer(WireReader r, SentencePieceModelSpec& s) {
  while (!r.done()) {
    int wire = 0;
    const uint32_t f = r.key(&wire);
    if (wire == 0 && (f == 3 || f == 24 || f == 35 || f == 40)) {
      const uint64_t v = r.varint();
      if (f == 3) s.model_type = static_cast<int>(v);
      if (f == 24) s.treat_whitespace_as_suffix = v != 0;
      if (f == 35) s.byte_fallback = v != 0;
      if (f == 40) s.unk_id = static_cast<int64_t>(static_cast<int32_t>(v));
    } else {
      r.skip(wire);
    }
  }
}

void read_normalizer(WireReader r, SentencePieceModelSpec& s) {
  while (!r.done()) {
    int wire = 0;
    const uint32_t f = r.key(&wire);
    if (f == 1 && wire == 2) {
      s.normalizer_name = r.bytes();
    } else if (f == 2 && wire == 2) {
      s.precompiled_charsmap = r.bytes();
    } else if (wire == 0 && (f == 3 || f == 4 || f == 5)) {
      const bool v = r.varint() != 0;
      if (f == 3) s.add_dummy_prefix = v;
      if (f == 4) s.remove_extra_whitespaces = v;
      if (f == 5) s.escape_whitespaces = v;
    } else {
      r.skip(wire);
    }
  }
}

// Standard base64 (tokenizers stores the charsmap so).
std::string base64(const std::string& in) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint32_t>(static_cast<uint8_t>(in[i + 1])) << 8;
    if (i + 2 < in.size()) v |= static_cast<uint32_t>(static_cast<uint8_t>(in[i + 2]));
    out += a[(v >> 18) & 63];
    out += a[(v >> 12) & 63];
    out += i + 1 < in.size() ? a[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? a[v & 63] : '=';
  }
  return out;
}

// --- tokenizer.json pieces -------------------------------------------------------------

const char* kMeta = "\xe2\x96\x81";  // U+2581, sentencepiece's whitespace symbol

json replace_string(const std::string& from, const std::string& to) {
  return json{{"type", "Replace"}, {"pattern", {{"String", from}}}, {"content", to}};
}

json replace_regex(const std::string& re, const std::string& to) {
  return json{{"type", "Replace"}, {"pattern", {{"Regex", re}}}, {"content", to}};
}

// retclip maps U+201C and U+201D to '"' before the tokenizer sees the text.
void add_quote_mapping(json& normalizers) {
  normalizers.push_back(replace_string("\xe2\x80\x9c", "\""));
  normalizers.push_back(replace_string("\xe2\x80\x9d", "\""));
}

json added_token(int64_t id, const std::string& content) {
  return json{{"id", id},         {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false},  {"normalized", false}, {"special", true}};
}

json template_processing(int64_t cls, int64_t sep) {
  auto special = [](const char* t, int type) {
    return json{{"SpecialToken", {{"id", t}, {"type_id", type}}}};
  };
  auto seq = [](const char* s, int type) { return json{{"Sequence", {{"id", s}, {"type_id", type}}}}; };
  return json{{"type", "TemplateProcessing"},
              {"single", {special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)}},
              {"pair",
               {special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1),
                special("[SEP]", 1)}},
              {"special_tokens",
               {{"[CLS]", {{"id", "[CLS]"}, {"ids", {cls}}, {"tokens", {"[CLS]"}}}},
                {"[SEP]", {{"id", "[SEP]"}, {"ids", {sep}}, {"tokens", {"[SEP]"}}}}}}};
}

json tokenizer_config(const std::string& cls, int64_t context, const json& extra) {
  json j{{"tokenizer_class", cls},       {"unk_token", "[UNK]"},
         {"sep_token", "[SEP]"},         {"pad_token", "[PAD]"},
         {"cls_token", "[CLS]"},         {"mask_token", "[MASK]"},
         {"model_max_length", context},  {"padding_side", "right"},
         {"truncation_side", "right"},   {"clean_up_tokenization_spaces", false}};
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

void write_json(const fs::path& path, const json& j, std::vector<fs::path>& files) {
  util::write_file_atomic(path, j.dump(2) + "\n");
  files.push_back(path);
}

std::vector<std::string> read_vocab_lines(const fs::path& path) {
  std::vector<std::string> out;
  std::istringstream in(util::read_file(path));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
  }
  return out;
}

}  // namespace

SentencePieceModelSpec read_sentencepiece_model(const fs::path& path) {
  RETCLIP_CHECK_USAGE(fs::is_regular_file(path), "cannot read the sentencepiece model ",
                      path.string(), ": no such file. HINT: keep data.tokenizer.path of the run "
                      "readable when exporting");
  const std::string bytes = util::read_file(path);
  SentencePieceModelSpec s;
  WireReader r(bytes, 0, bytes.size(), path.string());
  while (!r.done()) {
    int wire = 0;
    const uint32_t f = r.key(&wire);
    if (f >= 1 && f <= 3 && wire == 2) {
      auto [b, e] = r.span();
      WireReader sub(bytes, b, e, path.string());
      if (f == 1) s.pieces.push_back(read_piece(sub));
      if (f == 2) read_trainer(sub, s);
      if (f == 3) read_normalizer(sub, s);
    } else {
      r.skip(wire);
    }
  }
  RETCLIP_CHECK_USAGE(!s.pieces.empty(), path.string(),
                      ": no pieces (ModelProto field 1) found: not a sentencepiece model. "
                      "HINT: pass the .model file, not the .vocab");
  return s;
}

json sentencepiece_tokenizer_json(const SentencePieceModelSpec& s, const HfSpecialIds& ids,
                                  const std::string& where, bool map_quotes) {
  const std::string no =
      "export --format hf/open_clip (a Hugging Face tokenizer): the sentencepiece model " + where +
      " ";
  const std::string hint =
      " HINT: retrain it with `retclip tokenizer train --type sentencepiece` (a unigram model), "
      "or export --format retclip and tokenize with retclip";
  RETCLIP_CHECK_USAGE(s.model_type == SentencePieceModelSpec::kUnigram, no, "is a ",
                      s.model_type == SentencePieceModelSpec::kBpe    ? "BPE"
                      : s.model_type == SentencePieceModelSpec::kWord ? "word"
                      : s.model_type == SentencePieceModelSpec::kChar ? "char"
                                                                      : "unknown-type",
                      " model (trainer_spec.model_type ", s.model_type,
                      "); retclip writes tokenizer.json only for unigram models, whose "
                      "segmentation the tokenizers library reproduces exactly.",
                      hint);
  RETCLIP_CHECK_USAGE(!s.byte_fallback, no,
                      "uses byte fallback (trainer_spec.byte_fallback), which tokenizer.json "
                      "would encode differently for characters outside the vocabulary.",
                      hint);
  RETCLIP_CHECK_USAGE(!s.treat_whitespace_as_suffix, no,
                      "treats whitespace as a suffix (trainer_spec.treat_whitespace_as_suffix); "
                      "tokenizer.json's Metaspace only prefixes.",
                      hint);
  RETCLIP_CHECK_USAGE(s.escape_whitespaces, no,
                      "does not escape whitespace (normalizer_spec.escape_whitespaces false); "
                      "tokenizer.json's Metaspace always does.",
                      hint);
  for (size_t i = 0; i < s.pieces.size(); ++i)
    RETCLIP_CHECK_USAGE(s.pieces[i].type != SentencePieceModelSpec::kUserDefined &&
                            s.pieces[i].type != SentencePieceModelSpec::kByte,
                        no, "has a ",
                        s.pieces[i].type == SentencePieceModelSpec::kByte ? "byte" : "user-defined",
                        " piece '", s.pieces[i].piece, "' (id ", i,
                        "), which sentencepiece matches before segmenting and tokenizer.json "
                        "would not.",
                        hint);
  const std::pair<const char*, int64_t> specials[] = {
      {"[PAD]", ids.pad}, {"[UNK]", ids.unk}, {"[CLS]", ids.cls}, {"[SEP]", ids.sep}, {"[MASK]", ids.mask}};
  // sentencepiece never emits control or unused pieces for text; tokenizer.json's
  // Unigram would, unless they are the special tokens it splits off first.
  for (size_t i = 0; i < s.pieces.size(); ++i) {
    const int type = s.pieces[i].type;
    if (type != SentencePieceModelSpec::kControl && type != SentencePieceModelSpec::kUnused)
      continue;
    bool special = false;
    for (const auto& [tok, id] : specials) special |= static_cast<size_t>(id) == i && s.pieces[i].piece == tok;
    RETCLIP_CHECK_USAGE(special, no, "has the ",
                        type == SentencePieceModelSpec::kUnused ? "unused" : "control", " piece '",
                        s.pieces[i].piece, "' (id ", i,
                        "), which sentencepiece never produces from text and tokenizer.json would.",
                        hint);
  }
  for (const auto& [tok, id] : specials)
    RETCLIP_CHECK_USAGE(id >= 0 && static_cast<size_t>(id) < s.pieces.size() &&
                            s.pieces[static_cast<size_t>(id)].piece == tok,
                        no, "does not have ", tok, " at id ", id,
                        " (retclip's layout puts [PAD] [UNK] [CLS] [SEP] [MASK] at 0-4).", hint);
  RETCLIP_CHECK_USAGE(s.unk_id == ids.unk, no, "has trainer_spec.unk_id ", s.unk_id,
                      " but [UNK] is id ", ids.unk, ".", hint);

  json vocab = json::array();
  for (const auto& p : s.pieces) vocab.push_back(json::array({p.piece, p.score}));

  // sentencepiece's normaliser, in its order: the charsmap, then spaces trimmed and
  // collapsed (only ' ': other whitespace the charsmap did not map stays), then spaces
  // escaped. Metaspace adds the dummy prefix but skips it when the text already starts
  // with U+2581, which sentencepiece does not: such a start is doubled first.
  json norm = json::array();
  if (map_quotes) add_quote_mapping(norm);
  if (!s.precompiled_charsmap.empty())
    norm.push_back(
        json{{"type", "Precompiled"}, {"precompiled_charsmap", base64(s.precompiled_charsmap)}});
  if (s.remove_extra_whitespaces) {
    norm.push_back(replace_regex("\\A +| +\\z", ""));
    norm.push_back(replace_regex(" {2,}", " "));
  }
  norm.push_back(replace_string(" ", kMeta));
  if (s.add_dummy_prefix) norm.push_back(replace_regex(std::string("\\A") + kMeta, std::string(kMeta) + kMeta));

  json pre = nullptr, decoder = json{{"type", "Replace"}, {"pattern", {{"String", kMeta}}}, {"content", " "}};
  if (s.add_dummy_prefix) {
    pre = json{{"type", "Metaspace"}, {"replacement", kMeta}, {"prepend_scheme", "always"}, {"split", false}};
    decoder = pre;
  }
  json added = json::array();
  for (const auto& [tok, id] : specials) added.push_back(added_token(id, tok));
  std::sort(added.begin(), added.end(),
            [](const json& a, const json& b) { return a["id"].get<int64_t>() < b["id"].get<int64_t>(); });
  return json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added},
              {"normalizer", {{"type", "Sequence"}, {"normalizers", norm}}},
              {"pre_tokenizer", pre},
              {"post_processor", template_processing(ids.cls, ids.sep)},
              {"decoder", decoder},
              {"model",
               {{"type", "Unigram"}, {"unk_id", ids.unk}, {"vocab", vocab}, {"byte_fallback", false}}}};
}

json wordpiece_tokenizer_json(const std::vector<std::string>& vocab, bool lowercase,
                              const std::string& where, bool map_quotes) {
  json v = json::object();
  for (size_t i = 0; i < vocab.size(); ++i)
    if (!v.contains(vocab[i])) v[vocab[i]] = static_cast<int64_t>(i);
  json added = json::array();
  int64_t cls = -1, sep = -1;
  for (const char* tok : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    RETCLIP_CHECK_USAGE(v.contains(tok), "export --format hf/open_clip: the WordPiece vocabulary ", where,
                        " has no ", tok, " line. HINT: a BERT vocab.txt lists [PAD], [UNK], "
                        "[CLS], [SEP] and [MASK]");
    const int64_t id = v[tok].get<int64_t>();
    added.push_back(added_token(id, tok));
    if (std::string(tok) == "[CLS]") cls = id;
    if (std::string(tok) == "[SEP]") sep = id;
  }
  std::sort(added.begin(), added.end(),
            [](const json& a, const json& b) { return a["id"].get<int64_t>() < b["id"].get<int64_t>(); });
  json norm = json::array();
  if (map_quotes) add_quote_mapping(norm);
  norm.push_back(json{{"type", "BertNormalizer"},
                      {"clean_text", true},
                      {"handle_chinese_chars", true},
                      {"strip_accents", nullptr},
                      {"lowercase", lowercase}});
  return json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added},
              {"normalizer", {{"type", "Sequence"}, {"normalizers", norm}}},
              {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
              {"post_processor", template_processing(cls, sep)},
              {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
              {"model",
               {{"type", "WordPiece"},
                {"unk_token", "[UNK]"},
                {"continuing_subword_prefix", "##"},
                {"max_input_chars_per_word", 100},
                {"vocab", v}}}};
}

void check_hf_tokenizer(const HfTokenizerSource& src) {
  const std::string where = src.file.string();
  if (src.type == "sentencepiece") {
    sentencepiece_tokenizer_json(read_sentencepiece_model(src.file), HfSpecialIds{}, where,
                                 src.map_quotes);
    return;
  }
  RETCLIP_CHECK_USAGE(src.type == "wordpiece", "export: tokenizer type '", src.type, "' (", where,
                      ") has no Hugging Face form. HINT: use a wordpiece vocab.txt or a "
                      "sentencepiece unigram .model, or export --format retclip");
  RETCLIP_CHECK_USAGE(fs::is_regular_file(src.file), "cannot read the WordPiece vocabulary ", where,
                      ": no such file. HINT: keep data.tokenizer.path of the run readable when "
                      "exporting");
  wordpiece_tokenizer_json(read_vocab_lines(src.file), src.lowercase, where, src.map_quotes);
}

std::vector<fs::path> write_hf_tokenizer(const fs::path& dir, const HfTokenizerSource& src) {
  check_hf_tokenizer(src);
  std::vector<fs::path> files;
  const std::string where = src.file.string();
  if (src.type == "sentencepiece") {
    // Built (and refused) before anything is written.
    const json tj = sentencepiece_tokenizer_json(read_sentencepiece_model(src.file), HfSpecialIds{},
                                                 where, src.map_quotes);
    write_json(dir / "tokenizer.json", tj, files);
    write_json(dir / "tokenizer_config.json",
               tokenizer_config("PreTrainedTokenizerFast", src.context_length, json::object()),
               files);
    const fs::path m = dir / src.file.filename();
    if (fs::absolute(m) != fs::absolute(src.file)) util::write_file_atomic(m, util::read_file(src.file));
    files.push_back(m);
    return files;
  }
  const std::vector<std::string> vocab = read_vocab_lines(src.file);
  // BertTokenizer reproduces retclip's WordPiece from vocab.txt alone; the quote mapping
  // needs a normaliser it does not have, so then tokenizer.json carries the pipeline.
  json tj;
  if (src.map_quotes) tj = wordpiece_tokenizer_json(vocab, src.lowercase, where, true);
  const fs::path v = dir / "vocab.txt";
  if (fs::absolute(v) != fs::absolute(src.file)) util::write_file_atomic(v, util::read_file(src.file));
  files.push_back(v);
  const json extra{{"do_lower_case", src.lowercase},
                   {"do_basic_tokenize", true},
                   {"tokenize_chinese_chars", true},
                   {"strip_accents", nullptr}};
  if (src.map_quotes) {
    write_json(dir / "tokenizer.json", tj, files);
    write_json(dir / "tokenizer_config.json",
               tokenizer_config("PreTrainedTokenizerFast", src.context_length, extra), files);
  } else {
    write_json(dir / "tokenizer_config.json",
               tokenizer_config("BertTokenizer", src.context_length, extra), files);
  }
  write_json(dir / "special_tokens_map.json",
             json{{"unk_token", "[UNK]"},
                  {"sep_token", "[SEP]"},
                  {"pad_token", "[PAD]"},
                  {"cls_token", "[CLS]"},
                  {"mask_token", "[MASK]"}},
             files);
  return files;
}

}  // namespace retclip::io
