// The tokenizer interface's shared parts: the reference [CLS]/[SEP]/[PAD] layout,
// load_tokenizer() by type name, and a small CSV/JSONL reader of report columns for
// tokenizer training.
#include "retclip/data/tokenizer.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "retclip/data/image_check.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/data/sentencepiece_tokenizer.hpp"
#include "retclip/data/wordpiece.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::data {

std::vector<int64_t> Tokenizer::encode(const std::string& text, int64_t context_length) const {
  RETCLIP_CHECK_USAGE(context_length >= 2, "expected a context length of at least 2 (room for "
                      "[CLS] and [SEP]) but got ", context_length,
                      ". HINT: the RET-CLIP reference uses 100");
  std::vector<int64_t> body = tokenize(text);
  // Chinese-CLIP tokenize(): [CLS] + ids[:context_length - 2] + [SEP], then padding.
  const auto keep = std::min<size_t>(body.size(), static_cast<size_t>(context_length - 2));
  std::vector<int64_t> ids;
  ids.reserve(static_cast<size_t>(context_length));
  ids.push_back(cls_id());
  ids.insert(ids.end(), body.begin(), body.begin() + static_cast<std::ptrdiff_t>(keep));
  ids.push_back(sep_id());
  ids.resize(static_cast<size_t>(context_length), pad_id());
  return ids;
}

const std::vector<std::string>& tokenizer_types() {
  static const std::vector<std::string> types = {"auto", "wordpiece", "sentencepiece"};
  return types;
}

std::string map_curly_quotes(const std::string& text) {
  static const std::string kOpen = "\xE2\x80\x9C", kClose = "\xE2\x80\x9D";
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 3, kOpen) == 0 || text.compare(i, 3, kClose) == 0) {
      out += '"';
      i += 3;
    } else {
      out += text[i++];
    }
  }
  return out;
}

namespace {

// Applies the quote mapping in front of another tokenizer; everything else is the
// wrapped tokenizer's.
class QuoteMappingTokenizer : public Tokenizer {
 public:
  explicit QuoteMappingTokenizer(std::unique_ptr<Tokenizer> inner) : inner_(std::move(inner)) {}
  std::vector<int64_t> tokenize(const std::string& text) const override {
    return inner_->tokenize(map_curly_quotes(text));
  }
  int64_t vocab_size() const override { return inner_->vocab_size(); }
  int64_t pad_id() const override { return inner_->pad_id(); }
  int64_t cls_id() const override { return inner_->cls_id(); }
  int64_t sep_id() const override { return inner_->sep_id(); }
  int64_t unk_id() const override { return inner_->unk_id(); }
  int64_t mask_id() const override { return inner_->mask_id(); }
  std::string id_to_piece(int64_t id) const override { return inner_->id_to_piece(id); }
  std::string type() const override { return inner_->type(); }
  std::string path() const override { return inner_->path(); }

 private:
  std::unique_ptr<Tokenizer> inner_;
};

}  // namespace

namespace {

constexpr const char* kTypeHint =
    "name the type: --tokenizer-type (retclip pack), --type (retclip tokenizer encode) or "
    "data.tokenizer.type (config)";

/// What detect_tokenizer_type concludes from the bytes; "" when neither.
std::string type_of_bytes(const std::string& b) {
  // Text: no control bytes but tab, CR and LF, and valid UTF-8 (checked on the first
  // MiB, cut at a line end so that no character is split).
  std::string head = b.substr(0, std::min<size_t>(b.size(), 1 << 20));
  if (head.size() < b.size()) {
    const size_t eol = head.rfind('\n');
    if (eol != std::string::npos) head.resize(eol + 1);
  }
  bool text = true;
  for (unsigned char c : head)
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F) {
      text = false;
      break;
    }
  if (text && is_valid_utf8(head)) return "wordpiece";
  // ModelProto: field 1 (pieces), wire type 2, a varint length, then a SentencePiece
  // message whose own field 1 (the piece string) comes first.
  if (b.size() >= 4 && static_cast<unsigned char>(b[0]) == 0x0A) {
    size_t i = 1;
    uint64_t len = 0;
    for (int shift = 0; i < b.size() && shift < 35; shift += 7, ++i) {
      len |= static_cast<uint64_t>(static_cast<unsigned char>(b[i]) & 0x7F) << shift;
      if (!(static_cast<unsigned char>(b[i]) & 0x80)) break;
    }
    ++i;
    if (len > 0 && i + len <= b.size() && static_cast<unsigned char>(b[i]) == 0x0A)
      return "sentencepiece";
  }
  return "";
}

}  // namespace

std::string detect_tokenizer_type(const std::string& path) {
  std::error_code ec;
  RETCLIP_CHECK_USAGE(std::filesystem::exists(path, ec), "tokenizer file not found: ", path,
                      ". HINT: check the path (relative paths are taken from the current "
                      "directory); `retclip tokenizer train` writes a sentencepiece .model");
  RETCLIP_CHECK_USAGE(std::filesystem::is_regular_file(path, ec), "expected a tokenizer file "
                      "but ", path, " is not a regular file. HINT: name the vocab.txt or "
                      ".model file itself");
  const std::string bytes = util::read_file(path);
  RETCLIP_CHECK_USAGE(!bytes.empty(), "tokenizer file ", path,
                      " is empty. HINT: a WordPiece vocab.txt holds one token per line; a "
                      "sentencepiece .model is written by `retclip tokenizer train`");
  const std::string type = type_of_bytes(bytes);
  if (!type.empty()) return type;
  throw UsageError(str_cat(
      "cannot tell the type of tokenizer file ", path,
      ": it is neither text with one token per line (a WordPiece vocab.txt) nor a "
      "sentencepiece model (a protobuf starting with its pieces); it starts with '",
      printable_prefix(bytes, 16), "'. HINT: check the file, or ", kTypeHint));
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& type, const std::string& path,
                                          bool lowercase, bool map_quotes) {
  if (map_quotes)
    return std::make_unique<QuoteMappingTokenizer>(load_tokenizer(type, path, lowercase, false));
  if (type == "auto") return load_tokenizer(detect_tokenizer_type(path), path, lowercase, false);
  if (type == "wordpiece" || type == "sentencepiece") {
    try {
      if (type == "wordpiece") return std::make_unique<WordPieceTokenizer>(path, lowercase);
      return std::make_unique<SentencePieceTokenizer>(path);
    } catch (const UsageError& e) {
      // The type was named explicitly; say so when the file is clearly the other kind.
      std::string seen;
      try {
        seen = type_of_bytes(util::read_file(path));
      } catch (const std::exception&) {
      }
      if (seen.empty() || seen == type) throw;
      throw UsageError(str_cat(
          "the tokenizer type is given as ", type, " but ", path, " is a ", seen,
          seen == "sentencepiece" ? " model (a protobuf)" : " vocab (text, one token per line)",
          ". HINT: leave the type out (auto: inferred from the file) or give ", seen,
          ". The ", type, " loader said: ", e.what()));
    }
  }
  std::string valid;
  for (const auto& t : tokenizer_types()) valid += (valid.empty() ? "" : ", ") + t;
  throw UsageError(str_cat("unknown tokenizer type '", type, "' (for ", path,
                           "); expected one of: ", valid,
                           ". HINT: wordpiece reads a BERT vocab.txt, sentencepiece a .model"));
}

namespace {

// RFC 4180 records: quoted fields may hold commas, doubled quotes and line breaks.
// `line` is the 1-based line where each record starts.
struct CsvRecord {
  std::vector<std::string> fields;
  size_t line = 0;
};

std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& path) {
  std::vector<CsvRecord> records;
  size_t i = 0, line = 1;
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;  // UTF-8 byte order mark
  const size_t n = text.size();
  while (i < n) {
    CsvRecord rec;
    rec.line = line;
    std::string field;
    bool end_of_record = false;
    while (!end_of_record) {
      field.clear();
      if (i < n && text[i] == '"') {
        const size_t open_line = line;
        ++i;
        for (;;) {
          RETCLIP_CHECK_USAGE(i < n, path, " line ", open_line,
                              ": a quoted field is never closed. HINT: double the quotes "
                              "inside a quoted field (\"\")");
          if (text[i] == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (text[i] == '\n') ++line;
          field.push_back(text[i++]);
        }
        // Anything up to the delimiter after the closing quote is appended as is.
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') field.push_back(text[i++]);
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') field.push_back(text[i++]);
      }
      rec.fields.push_back(field);
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < n && text[i] == '\r') ++i;
      if (i < n && text[i] == '\n') {
        ++i;
        ++line;
      }
      end_of_record = true;
    }
    if (rec.fields.size() == 1 && rec.fields[0].empty()) continue;  // blank line
    records.push_back(std::move(rec));
  }
  return records;
}

std::vector<std::string> read_csv_texts(const std::string& text, const std::string& path,
                                        const std::string& column) {
  auto records = parse_csv(text, path);
  RETCLIP_CHECK_USAGE(!records.empty(), path, " is empty; expected a header row naming a `",
                      column, "` column");
  const auto& header = records[0].fields;
  auto find = [&](const std::string& name) {
    return std::find(header.begin(), header.end(), name) - header.begin();
  };
  auto col = static_cast<size_t>(find(column));
  if (col == header.size() && column == "report") col = static_cast<size_t>(find("text"));
  if (col == header.size()) {
    std::string cols;
    for (const auto& h : header) cols += (cols.empty() ? "" : ", ") + h;
    throw UsageError(str_cat(path, " has no `", column, "` column (header: ", cols,
                             "). HINT: the manifest needs a report column with the "
                             "diagnostic text of each patient"));
  }
  std::vector<std::string> out;
  for (size_t r = 1; r < records.size(); ++r) {
    const auto& rec = records[r];
    RETCLIP_CHECK_USAGE(rec.fields.size() == header.size(), path, " line ", rec.line, ": ",
                        rec.fields.size(), " fields but the header has ", header.size(),
                        ". HINT: quote fields that contain commas");
    if (!rec.fields[col].empty()) out.push_back(rec.fields[col]);
  }
  return out;
}

std::vector<std::string> read_jsonl_texts(const std::string& text, const std::string& path,
                                          const std::string& column) {
  std::vector<std::string> out;
  size_t pos = 0, line = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view row(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line;
    if (row.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(row);
    } catch (const nlohmann::json::parse_error& e) {
      throw UsageError(str_cat(path, " line ", line, ": not valid JSON (", e.what(),
                               "). HINT: a JSONL file holds one JSON object per line"));
    }
    RETCLIP_CHECK_USAGE(j.is_object(), path, " line ", line, ": expected a JSON object but "
                        "found ", j.type_name());
    auto it = j.find(column);
    if (it == j.end() && column == "report") it = j.find("text");
    RETCLIP_CHECK_USAGE(it != j.end(), path, " line ", line, ": no \"", column,
                        "\" key. HINT: every row needs the report text");
    if (it->is_null()) continue;
    RETCLIP_CHECK_USAGE(it->is_string(), path, " line ", line, ": expected \"", column,
                        "\" to be a string but found ", it->type_name());
    std::string s = it->get<std::string>();
    if (!s.empty()) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

std::vector<std::string> read_report_texts(const std::string& manifest_path,
                                           const std::string& column) {
  const std::string ext = std::filesystem::path(manifest_path).extension().string();
  const std::string text = util::read_file(manifest_path);
  if (ext == ".jsonl" || ext == ".json") return read_jsonl_texts(text, manifest_path, column);
  if (ext == ".csv") return read_csv_texts(text, manifest_path, column);
  throw UsageError(str_cat("cannot tell the format of ", manifest_path, " from its extension '",
                           ext, "'. HINT: name it .csv (header row) or .jsonl"));
}

}  // namespace retclip::data
