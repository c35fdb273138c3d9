// Dataset readers: native CSV/JSONL manifests and the RET-CLIP jsonl+tsv layout,
// with per-row checks and the data.on_bad_sample policy, and the RFC 4180 CSV parser.
#include "retclip/data/manifest.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

#include "retclip/data/base64.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/strings.hpp"

namespace retclip::data {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------
// Text checks

bool is_valid_utf8(const std::string& s, size_t* bad_offset) {
  size_t i = 0;
  const size_t n = s.size();
  auto bad = [&](size_t at) {
    if (bad_offset) *bad_offset = at;
    return false;
  };
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return bad(i);
    }
    if (i + len > n) return bad(i);
    for (int k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return bad(i);
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return bad(i);
    i += len;
  }
  return true;
}

namespace {

using util::ends_with;

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_ascii_space(s[b])) ++b;
  while (e > b && is_ascii_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

/// True when `s` holds only whitespace: ASCII, no-break space (U+00A0), ideographic
/// space (U+3000, common in Chinese reports) or a BOM (U+FEFF).
bool is_blank(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    if (is_ascii_space(s[i])) {
      ++i;
    } else if (s.compare(i, 2, "\xC2\xA0") == 0) {
      i += 2;
    } else if (s.compare(i, 3, "\xE3\x80\x80") == 0 || s.compare(i, 3, "\xEF\xBB\xBF") == 0) {
      i += 3;
    } else {
      return false;
    }
  }
  return true;
}

constexpr const char* kPolicyHint =
    "HINT: fix the row, or set data.on_bad_sample: skip to drop bad rows and list them";

/// Applies data.on_bad_sample to the problems a reader finds.
class BadRows {
 public:
  explicit BadRows(BadSamplePolicy policy) : policy_(policy) {}
  void add(const std::string& origin, const std::string& reason,
           const std::string& patient_id = "") {
    if (policy_ == BadSamplePolicy::kFail)
      throw UsageError(str_cat(origin, ": ", reason, ". ", kPolicyHint));
    bad_.push_back({origin, reason, patient_id});
  }
  /// Logs a summary of what was skipped.
  void summarise(const std::string& file, int64_t rows) const {
    if (bad_.empty()) return;
    log::warn(
        "{}: {} row(s) read, {} problem(s) skipped (data.on_bad_sample: skip); "
        "first: {}: {}",
        file, rows, bad_.size(), bad_.front().origin, bad_.front().reason);
  }
  std::vector<BadSample>& bad() { return bad_; }

 private:
  BadSamplePolicy policy_;
  std::vector<BadSample> bad_;
};

/// One manifest row before checking, whichever file format it came from.
struct RowFields {
  std::string patient_id, left, right, report, split, left_report, right_report;
  std::map<std::string, std::string> labels;
};

std::string resolve_path(const fs::path& base, const std::string& p) {
  if (p.empty()) return p;
  fs::path q(p);
  if (q.is_absolute() || base.empty()) return q.lexically_normal().string();
  return (base / q).lexically_normal().string();
}

std::string check_text(const char* key, const std::string& s, bool required) {
  size_t off = 0;
  if (!is_valid_utf8(s, &off))
    return str_cat(key, " is not valid UTF-8 (bad byte at offset ", off,
                   "). HINT: save the file as UTF-8");
  if (required && is_blank(s)) return str_cat(key, " is empty or only whitespace");
  return "";
}

/// Checks a row and builds the Sample; returns the reason when the row is bad.
std::string build_sample(RowFields&& f, const fs::path& base, const std::string& origin,
                         Sample* out) {
  f.patient_id = trim(f.patient_id);
  f.left = trim(f.left);
  f.right = trim(f.right);
  f.split = trim(f.split);
  if (f.patient_id.empty()) return "patient_id is empty";
  for (auto [key, val, required] :
       {std::tuple<const char*, const std::string*, bool>{"patient_id", &f.patient_id, true},
        {"report", &f.report, true},
        {"left_report", &f.left_report, false},
        {"right_report", &f.right_report, false},
        {"left_image", &f.left, false},
        {"right_image", &f.right, false}}) {
    std::string why = check_text(key, *val, required);
    if (!why.empty()) return why;
  }
  if (f.left.empty() && f.right.empty())
    return "both eyes are missing (left_image and right_image are empty); a patient needs at "
           "least one photograph";
  out->patient_id = std::move(f.patient_id);
  out->left.path = resolve_path(base, f.left);
  out->right.path = resolve_path(base, f.right);
  out->report = std::move(f.report);
  out->left_report = std::move(f.left_report);
  out->right_report = std::move(f.right_report);
  out->split = std::move(f.split);
  out->labels = std::move(f.labels);
  out->origin = origin;
  return "";
}

void check_exists(const std::string& path, const char* what) {
  std::error_code ec;
  RETCLIP_CHECK_USAGE(fs::exists(path, ec), what, " not found: ", path,
                      ". HINT: check the path (relative paths are taken from the current "
                      "directory)");
  RETCLIP_CHECK_USAGE(!fs::is_directory(path, ec), "expected a ", what, " file but ", path,
                      " is a directory");
}

std::string file_name(const std::string& path) {
  return fs::path(path).filename().string();
}

std::string json_to_text(const json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

const std::vector<std::string> kRequired = {"patient_id", "left_image", "right_image", "report"};

/// Reads manifest rows from a CSV file.
void read_csv_rows(const std::string& path, const std::string& text, const fs::path& base,
                   BadRows& bad, std::vector<Sample>& samples, int64_t& rows,
                   std::unordered_map<std::string, int64_t>& seen) {
  const std::string name = file_name(path);
  std::vector<CsvRecord> recs = parse_csv(text);
  RETCLIP_CHECK_USAGE(!recs.empty(), "manifest ", path,
                      " is empty: expected a header row naming the columns patient_id, "
                      "left_image, right_image, report");
  const CsvRecord& head = recs.front();
  RETCLIP_CHECK_USAGE(head.error.empty(), path, " row ", head.line, " (header): ", head.error);
  std::vector<std::string> cols;
  std::unordered_map<std::string, size_t> index;
  for (const std::string& c : head.fields) {
    std::string t = trim(c);
    RETCLIP_CHECK_USAGE(index.count(t) == 0, "manifest ", path, " names the column '", t,
                        "' twice in its header (row ", head.line, ")");
    index[t] = cols.size();
    cols.push_back(t);
  }
  for (const std::string& req : kRequired) {
    if (index.count(req) == 0) {
      std::string have;
      for (const std::string& c : cols) have += (have.empty() ? "" : ", ") + c;
      throw UsageError(str_cat("manifest ", path, " has no column '", req, "' (header row ",
                               head.line, " has: ", have,
                               "). HINT: the header must name patient_id, left_image, "
                               "right_image and report; see docs/DATA.md"));
    }
  }
  for (size_t r = 1; r < recs.size(); ++r) {
    const CsvRecord& rec = recs[r];
    ++rows;
    const std::string origin = str_cat(name, " row ", rec.line);
    if (!rec.error.empty()) {
      bad.add(origin, rec.error);
      continue;
    }
    if (rec.fields.size() != cols.size()) {
      bad.add(origin,
              str_cat("expected ", cols.size(), " fields as in the header, found ",
                      rec.fields.size(), " (a field holding a comma must be quoted: \"a, b\")"));
      continue;
    }
    RowFields f;
    for (size_t k = 0; k < cols.size(); ++k) {
      const std::string& c = cols[k];
      const std::string& v = rec.fields[k];
      if (c == "patient_id")
        f.patient_id = v;
      else if (c == "left_image")
        f.left = v;
      else if (c == "right_image")
        f.right = v;
      else if (c == "report")
        f.report = v;
      else if (c == "split")
        f.split = v;
      else if (c == "left_report")
        f.left_report = v;
      else if (c == "right_report")
        f.right_report = v;
      else
        f.labels[c] = v;
    }
    const std::string pid = trim(f.patient_id);
    Sample s;
    std::string why = build_sample(std::move(f), base, origin, &s);
    if (why.empty()) {
      auto [it, fresh] = seen.emplace(s.patient_id, rec.line);
      if (!fresh)
        why = str_cat("duplicate patient_id '", s.patient_id, "' (first at row ", it->second, ")");
    }
    if (!why.empty()) {
      bad.add(origin, why, pid);
      continue;
    }
    samples.push_back(std::move(s));
  }
}

/// Splits text into lines (LF or CRLF), with 1-based line numbers.
template <typename Fn>
void for_each_line(const std::string& text, Fn&& fn) {
  int64_t line = 0;
  size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line;
    size_t stop = end;
    if (stop > start && text[stop - 1] == '\r') --stop;
    fn(text.substr(start, stop - start), line);
    start = end + 1;
  }
}

/// Parses one JSONL line that must hold a JSON object; records a bad row otherwise.
bool parse_object_line(const std::string& line, const std::string& origin, BadRows& bad,
                       json* out) {
  try {
    *out = json::parse(line);
  } catch (const json::exception& e) {
    bad.add(origin, str_cat("not a valid JSON line: ", e.what()));
    return false;
  }
  if (!out->is_object()) {
    bad.add(origin, str_cat("expected a JSON object per line but found a ", out->type_name()));
    return false;
  }
  return true;
}

/// Reads manifest rows from a JSONL file (one JSON object per line).
void read_jsonl_rows(const std::string& path, const std::string& text, const fs::path& base,
                     BadRows& bad, std::vector<Sample>& samples, int64_t& rows,
                     std::unordered_map<std::string, int64_t>& seen) {
  const std::string name = file_name(path);
  for_each_line(text, [&](const std::string& line, int64_t lineno) {
    if (is_blank(line)) return;
    ++rows;
    const std::string origin = str_cat(name, " row ", lineno);
    json j;
    if (!parse_object_line(line, origin, bad, &j)) return;
    RowFields f;
    std::string why;
    for (const std::string& req : {std::string("patient_id"), std::string("report")}) {
      if (!j.contains(req) || j[req].is_null()) {
        why = str_cat("missing key '", req, "'");
        break;
      }
    }
    if (why.empty() && !j.contains("left_image") && !j.contains("right_image")) {
      std::string keys;
      for (auto it = j.begin(); it != j.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
      why =
          str_cat("both eyes are missing (no 'left_image' or 'right_image' key; keys: ", keys, ")");
    }
    for (auto it = j.begin(); why.empty() && it != j.end(); ++it) {
      const std::string& k = it.key();
      const json& v = it.value();
      std::string* dst = nullptr;
      if (k == "patient_id") {
        if (v.is_string() || v.is_number_integer()) {
          f.patient_id = json_to_text(v);
        } else {
          why =
              str_cat("expected 'patient_id' to be a string or an integer, found ", v.type_name());
        }
        continue;
      }
      if (k == "left_image")
        dst = &f.left;
      else if (k == "right_image")
        dst = &f.right;
      else if (k == "report")
        dst = &f.report;
      else if (k == "split")
        dst = &f.split;
      else if (k == "left_report")
        dst = &f.left_report;
      else if (k == "right_report")
        dst = &f.right_report;
      if (dst == nullptr) {
        f.labels[k] = json_to_text(v);
      } else if (v.is_string()) {
        *dst = v.get<std::string>();
      } else if (!v.is_null()) {
        why = str_cat("expected '", k, "' to be a string or null, found ", v.type_name());
      }
    }
    // The id as text (an integer id as its decimal digits), for the bad-sample list.
    std::string pid;
    if (j.contains("patient_id") &&
        (j["patient_id"].is_string() || j["patient_id"].is_number_integer()))
      pid = trim(json_to_text(j["patient_id"]));
    Sample s;
    if (why.empty()) why = build_sample(std::move(f), base, origin, &s);
    if (why.empty()) {
      auto [it, fresh] = seen.emplace(s.patient_id, lineno);
      if (!fresh)
        why = str_cat("duplicate patient_id '", s.patient_id, "' (first at row ", it->second, ")");
    }
    if (!why.empty()) {
      bad.add(origin, why, pid);
      return;
    }
    samples.push_back(std::move(s));
  });
}

std::string lower_ext(const std::string& path) {
  std::string e = fs::path(path).extension().string();
  for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

/// Names of the *_texts.jsonl files in a directory, for hints.
std::vector<std::string> texts_files_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (ends_with(n, "_texts.jsonl")) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void fill_report(ReadReport* report, int64_t rows, const std::vector<Sample>& samples,
                 std::vector<BadSample>&& bad) {
  if (!report) return;
  report->rows = rows;
  report->samples = static_cast<int64_t>(samples.size());
  report->bad = std::move(bad);
}

}  // namespace

// ---------------------------------------------------------------------------------
// CSV

std::vector<CsvRecord> parse_csv(const std::string& text) {
  std::vector<CsvRecord> out;
  const size_t n = text.size();
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int64_t line = 1;
  auto at_eol = [&](size_t k) {
    return text[k] == '\n' || (text[k] == '\r' && (k + 1 == n || text[k + 1] == '\n'));
  };
  while (i < n) {
    if (text[i] == '\n') {
      ++line;
      ++i;
      continue;
    }
    if (text[i] == '\r' && (i + 1 == n || text[i + 1] == '\n')) {
      i += (i + 1 == n) ? 1 : 2;
      ++line;
      continue;
    }
    CsvRecord rec;
    rec.line = line;
    while (true) {
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t open_line = line;
        ++i;
        bool closed = false;
        while (i < n) {
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (!closed) {
          rec.error = str_cat("a quoted field opened on line ", open_line,
                              " is never closed (unbalanced '\"')");
          rec.fields.push_back(std::move(field));
          i = n;
          break;
        }
        if (i < n && text[i] != ',' && !at_eol(i)) {
          rec.error =
              "unexpected text after a closing quote (a '\"' inside a quoted field "
              "must be doubled: \"\")";
          while (i < n && text[i] != '\n') ++i;
        }
      } else {
        while (i < n && text[i] != ',' && !at_eol(i)) field += text[i++];
      }
      rec.fields.push_back(std::move(field));
      if (i >= n) break;
      if (text[i] == ',') {
        ++i;  // a ',' at the very end leaves an empty last field for the next pass
        continue;
      }
      if (text[i] == '\r') ++i;
      if (i < n && text[i] == '\n') ++i;
      ++line;
      break;
    }
    out.push_back(std::move(rec));
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Readers

std::vector<Sample> read_manifest(const std::string& path, BadSamplePolicy policy,
                                  ReadReport* report) {
  check_exists(path, "manifest");
  const std::string ext = lower_ext(path);
  RETCLIP_CHECK_USAGE(ext == ".csv" || ext == ".jsonl" || ext == ".ndjson", "manifest ", path,
                      " has the extension '", ext,
                      "'; expected .csv or .jsonl. HINT: for the RET-CLIP layout pass the "
                      "folder holding <split>_texts.jsonl and <split>_imgs.tsv");
  const std::string text = util::read_file(path);
  const fs::path base = fs::path(path).parent_path();
  BadRows bad(policy);
  std::vector<Sample> samples;
  int64_t rows = 0;
  std::unordered_map<std::string, int64_t> seen;
  if (ext == ".csv") {
    read_csv_rows(path, text, base, bad, samples, rows, seen);
  } else {
    read_jsonl_rows(path, text, base, bad, samples, rows, seen);
  }
  bad.summarise(path, rows);
  fill_report(report, rows, samples, std::move(bad.bad()));
  return samples;
}

std::vector<Sample> filter_split(const std::vector<Sample>& samples, const std::string& split) {
  if (split.empty()) return samples;
  std::vector<Sample> out;
  for (const Sample& s : samples)
    if (s.split == split) out.push_back(s);
  return out;
}

std::vector<Sample> read_retclip(const std::string& dir_or_prefix, const std::string& split,
                                 BadSamplePolicy policy, ReadReport* report) {
  const std::string split_name = split.empty() ? "train" : split;
  std::string texts_path, imgs_path;
  std::error_code ec;
  if (fs::is_directory(dir_or_prefix, ec)) {
    // Chinese-CLIP names its validation split "valid": accept it for "val" and back.
    std::string file_split = split_name;
    const std::string alias = split_name == "val" ? "valid" : split_name == "valid" ? "val" : "";
    if (!alias.empty() &&
        !fs::exists(fs::path(dir_or_prefix) / (split_name + "_texts.jsonl"), ec) &&
        fs::exists(fs::path(dir_or_prefix) / (alias + "_texts.jsonl"), ec))
      file_split = alias;
    texts_path = (fs::path(dir_or_prefix) / (file_split + "_texts.jsonl")).string();
    imgs_path = (fs::path(dir_or_prefix) / (file_split + "_imgs.tsv")).string();
    if (!fs::exists(texts_path, ec)) {
      std::string have;
      for (const std::string& f : texts_files_in(dir_or_prefix))
        have += (have.empty() ? "" : ", ") + f;
      throw UsageError(str_cat("RET-CLIP data folder ", dir_or_prefix, " has no ", split_name,
                               "_texts.jsonl for split '", split_name,
                               "' (texts files there: ", have.empty() ? "none" : have,
                               "). HINT: set the split to one of those prefixes"));
    }
  } else {
    std::string prefix = dir_or_prefix;
    if (ends_with(prefix, "_texts.jsonl")) prefix.resize(prefix.size() - 12);
    texts_path = prefix + "_texts.jsonl";
    imgs_path = prefix + "_imgs.tsv";
  }
  check_exists(texts_path, "RET-CLIP texts file");
  check_exists(imgs_path, "RET-CLIP images file (patient_id TAB base64 left TAB base64 right)");
  const std::string tsv_name = file_name(imgs_path), texts_name = file_name(texts_path);
  BadRows bad(policy);

  // Images: patient_id -> (left, right), or the reason its row is unusable.
  struct Eyes {
    ImageRef left, right;
    int64_t row = 0;
    std::string bad_reason;
  };
  std::unordered_map<std::string, Eyes> images;
  {
    std::ifstream in(imgs_path, std::ios::binary);
    RETCLIP_CHECK_USAGE(in.good(), "cannot open ", imgs_path, " for reading");
    std::string line;
    int64_t row = 0;
    while (std::getline(in, line)) {
      ++row;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (row == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
      if (is_blank(line)) continue;
      const std::string origin = str_cat(tsv_name, " row ", row);
      std::vector<std::string> fields;
      size_t start = 0;
      while (true) {
        size_t tab = line.find('\t', start);
        fields.push_back(
            line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
        if (tab == std::string::npos) break;
        start = tab + 1;
      }
      Eyes eyes;
      eyes.row = row;
      const std::string pid = trim(fields[0]);
      if (pid.empty()) {
        bad.add(origin, "patient_id (first field) is empty");
        continue;
      }
      auto prev = images.find(pid);
      if (prev != images.end()) {
        bad.add(origin,
                str_cat("duplicate patient_id '", pid, "' (first at row ", prev->second.row, ")"),
                pid);
        continue;
      }
      std::string why;
      if (fields.size() != 3) {
        why = str_cat(
            "expected 3 tab-separated fields (patient_id, base64 left image, base64 "
            "right image), found ",
            fields.size());
      }
      const char* eye_names[2] = {"left", "right"};
      ImageRef* refs[2] = {&eyes.left, &eyes.right};
      for (int e = 0; e < 2 && why.empty(); ++e) {
        const std::string b64 = trim(fields[1 + e]);
        if (b64.empty()) continue;  // missing eye
        std::string err;
        if (!base64_try_decode(b64, &refs[e]->bytes, &err)) {
          why = str_cat(eye_names[e], " image: invalid base64: ", err);
        } else {
          refs[e]->origin = str_cat(tsv_name, " row ", row, " (", eye_names[e], ")");
        }
      }
      if (why.empty() && !eyes.left.present() && !eyes.right.present())
        why = "both eyes are missing (both image fields are empty)";
      if (!why.empty()) {
        bad.add(origin, why, pid);
        eyes = Eyes{};
        eyes.row = row;
        eyes.bad_reason = why;
      }
      images.emplace(pid, std::move(eyes));
    }
  }

  std::vector<Sample> samples;
  std::set<std::string> missing;  // patients named by a text but without an images row
  int64_t rows = 0;
  const std::string text = util::read_file(texts_path);
  for_each_line(text, [&](const std::string& line, int64_t lineno) {
    if (is_blank(line)) return;
    ++rows;
    const std::string origin = str_cat(texts_name, " row ", lineno);
    json j;
    if (!parse_object_line(line, origin, bad, &j)) return;
    std::string why;
    if (!j.contains("text") || !j["text"].is_string()) {
      why = "expected a string 'text' (the report)";
    } else if (!j.contains("image_ids") || !j["image_ids"].is_array() || j["image_ids"].empty()) {
      why = "expected 'image_ids' to be a non-empty array of patient ids";
    }
    if (why.empty()) why = check_text("text", j["text"].get<std::string>(), true);
    if (!why.empty()) {
      bad.add(origin, why);
      return;
    }
    const std::string report_text = j["text"].get<std::string>();
    const std::string text_id = j.contains("text_id") ? json_to_text(j["text_id"]) : "";
    // Optional per-eye reports (left_text / right_text), as retclip synth writes them.
    std::string eye_text[2];
    const char* eye_keys[2] = {"left_text", "right_text"};
    for (int e = 0; e < 2; ++e) {
      if (!j.contains(eye_keys[e]) || j[eye_keys[e]].is_null()) continue;
      if (!j[eye_keys[e]].is_string()) {
        bad.add(origin, str_cat("expected '", eye_keys[e], "' to be a string, found ",
                                j[eye_keys[e]].type_name()));
        return;
      }
      eye_text[e] = j[eye_keys[e]].get<std::string>();
      std::string eye_why = check_text(eye_keys[e], eye_text[e], false);
      if (!eye_why.empty()) {
        bad.add(origin, eye_why);
        return;
      }
    }
    for (const json& id : j["image_ids"]) {
      if (!id.is_string() && !id.is_number_integer()) {
        bad.add(origin, str_cat("expected each image_id to be a string or an integer, found ",
                                id.type_name()));
        continue;
      }
      const std::string pid = json_to_text(id);
      auto it = images.find(pid);
      // Bad samples are counted per patient, not per text naming it: a patient without
      // an images row is reported at the first text that names it, one whose images row
      // is bad was reported at that row already.
      if (it == images.end()) {
        if (missing.insert(pid).second)
          bad.add(origin,
                  str_cat("patient '", pid, "' has no row in ", tsv_name,
                          ". HINT: every id in image_ids must be the first field of a "
                          "line of the images file"),
                  pid);
        continue;
      }
      if (!it->second.bad_reason.empty()) continue;
      Sample s;
      s.patient_id = pid;
      s.left = it->second.left;
      s.right = it->second.right;
      s.report = report_text;
      s.left_report = eye_text[0];
      s.right_report = eye_text[1];
      s.split = split_name;
      if (!text_id.empty()) s.labels["text_id"] = text_id;
      s.origin = origin;
      samples.push_back(std::move(s));
    }
  });
  bad.summarise(texts_path, rows);
  fill_report(report, rows, samples, std::move(bad.bad()));
  return samples;
}

std::string detect_format(const std::string& path, const std::string& split) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const std::string split_name = split.empty() ? "train" : split;
    if (fs::exists(fs::path(path) / (split_name + "_texts.jsonl"), ec) ||
        !texts_files_in(path).empty())
      return "retclip";
    throw UsageError(str_cat("data path ", path,
                             " is a folder without any *_texts.jsonl. HINT: pass a manifest "
                             "file (.csv or .jsonl) or a RET-CLIP folder holding "
                             "<split>_texts.jsonl and <split>_imgs.tsv"));
  }
  if (fs::exists(path, ec)) {
    if (ends_with(path, "_texts.jsonl")) return "retclip";
    const std::string ext = lower_ext(path);
    if (ext == ".csv" || ext == ".jsonl" || ext == ".ndjson") return "manifest";
    throw UsageError(str_cat("cannot tell the layout of ", path, " from its extension '", ext,
                             "'. HINT: use a .csv or .jsonl manifest, or a RET-CLIP folder; "
                             "or set data.format to manifest or retclip"));
  }
  if (fs::exists(path + "_texts.jsonl", ec)) return "retclip";
  throw UsageError(str_cat("data path not found: ", path,
                           ". HINT: check the path (relative paths are taken from the current "
                           "directory)"));
}

std::vector<Sample> read_samples(const std::string& path, const std::string& format,
                                 const std::string& split, BadSamplePolicy policy,
                                 ReadReport* report) {
  std::string fmt_name = format.empty() ? "auto" : format;
  if (fmt_name == "auto") fmt_name = detect_format(path, split);
  if (fmt_name == "retclip") return read_retclip(path, split, policy, report);
  RETCLIP_CHECK_USAGE(fmt_name == "manifest",
                      "expected data.format to be auto, manifest or "
                      "retclip but got '",
                      format, "'");
  std::vector<Sample> all = read_manifest(path, policy, report);
  if (split.empty()) return all;
  bool any_split = false;
  for (const Sample& s : all) any_split = any_split || !s.split.empty();
  if (!any_split) {
    log::info("{}: no split column, using all {} patients for split '{}'", path, all.size(), split);
    return all;
  }
  std::vector<Sample> out = filter_split(all, split);
  if (report) report->samples = static_cast<int64_t>(out.size());
  return out;
}

}  // namespace retclip::data
