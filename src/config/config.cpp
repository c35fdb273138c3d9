// Loading a Config: defaults, then a YAML file, then `--set a.b=c` overrides, each
// value typed by the key it lands on; every error names the key path, the file and
// line (or the override), what was expected and what was found. Also to_yaml and hash.
#include "retclip/config/config.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "schema.hpp"

namespace retclip::config {

using namespace detail;

namespace {

/// A value as it arrived, before it is typed by its key: from a YAML node or a --set.
struct Raw {
  enum Type { kNull, kScalar, kList, kMap } type = kNull;
  std::string scalar;
  bool quoted = false;             ///< a quoted YAML scalar: a string, never a number
  std::vector<std::string> items;  ///< kList elements (scalars)
  std::string bad_item;            ///< a list element that is not a scalar, described
};

std::string describe(const Raw& v) {
  switch (v.type) {
    case Raw::kNull:
      return "nothing (an empty value)";
    case Raw::kScalar:
      return v.quoted ? fmt::format("the quoted string \"{}\"", v.scalar)
                      : fmt::format("`{}`", v.scalar);
    case Raw::kList:
      return fmt::format("a list of {} item{}", v.items.size(), v.items.size() == 1 ? "" : "s");
    case Raw::kMap:
      return "a mapping (nested keys)";
  }
  return "?";
}

/// The names a kChoice key accepts.
std::vector<std::string> choice_names(const Field& f) {
  return f.allowed.empty() ? f.choice->names() : f.allowed;
}

std::string expected(const Field& f) {
  switch (f.kind) {
    case Kind::kInt:
      return "an integer";
    case Kind::kUInt:
      return "a non-negative integer";
    case Kind::kDouble:
      return "a number";
    case Kind::kBool:
      return "a boolean (true/false/yes/no/1/0)";
    case Kind::kString:
      return "a string";
    case Kind::kDoubleArray:
      return f.size == 2 ? "a list of 2 numbers like [0.9, 0.98]"
                         : fmt::format("a list of {} numbers like [0.5, 0.5, 0.5]", f.size);
    case Kind::kStringList:
      return "a list of strings like [bias, ln_]";
    case Kind::kChoice: {
      std::string list;
      for (const auto& n : choice_names(f)) list += (list.empty() ? "" : ", ") + n;
      return "one of " + list;
    }
    case Kind::kSection:
      break;
  }
  return "a section";
}

std::string child_names(const std::vector<Field>& fields) {
  std::string out;
  for (const auto& f : fields) out += (out.empty() ? "" : ", ") + f.name;
  return out;
}

[[noreturn]] void type_error(const Field& f, const std::string& path, const std::string& where,
                             const std::string& found) {
  throw UsageError(
      fmt::format("`{}` in {}: expected {}, found {}. HINT: see docs/CONFIG.md for "
                  "the type and default of every key",
                  path, where, expected(f), found));
}

/// Stores `v` into the field, typed by the field's kind.
void assign(const Field& f, const std::string& path, const std::string& where, const Raw& v) {
  auto need_scalar = [&]() {
    if (v.type != Raw::kScalar || v.quoted) type_error(f, path, where, describe(v));
  };
  // A name may be quoted ("bf16"), as a string key's value may.
  auto need_name = [&]() {
    if (v.type != Raw::kScalar) type_error(f, path, where, describe(v));
  };
  switch (f.kind) {
    case Kind::kInt:
      need_scalar();
      if (!parse_int(v.scalar, *static_cast<int64_t*>(f.ptr)))
        type_error(f, path, where, describe(v));
      return;
    case Kind::kUInt:
      need_scalar();
      if (!parse_uint(v.scalar, *static_cast<uint64_t*>(f.ptr)))
        type_error(f, path, where, describe(v));
      return;
    case Kind::kDouble:
      need_scalar();
      if (!parse_double(v.scalar, *static_cast<double*>(f.ptr)))
        type_error(f, path, where, describe(v));
      return;
    case Kind::kBool:
      need_scalar();
      if (!parse_bool(v.scalar, *static_cast<bool*>(f.ptr)))
        type_error(f, path, where, describe(v));
      return;
    case Kind::kString:
      if (v.type == Raw::kNull) {
        static_cast<std::string*>(f.ptr)->clear();
        return;
      }
      if (v.type != Raw::kScalar) type_error(f, path, where, describe(v));
      *static_cast<std::string*>(f.ptr) = v.scalar;
      return;
    case Kind::kDoubleArray: {
      if (v.type != Raw::kList) type_error(f, path, where, describe(v));
      if (!v.bad_item.empty()) type_error(f, path, where, v.bad_item);
      if (v.items.size() != f.size) type_error(f, path, where, describe(v));
      std::vector<double> vals(f.size);
      for (size_t i = 0; i < f.size; ++i)
        if (!parse_double(v.items[i], vals[i]))
          type_error(f, path, where, fmt::format("`{}` at item {}", v.items[i], i + 1));
      std::copy(vals.begin(), vals.end(), static_cast<double*>(f.ptr));
      return;
    }
    case Kind::kStringList: {
      auto* out = static_cast<std::vector<std::string>*>(f.ptr);
      if (v.type == Raw::kNull) {
        out->clear();
        return;
      }
      if (v.type != Raw::kList) type_error(f, path, where, describe(v));
      if (!v.bad_item.empty()) type_error(f, path, where, v.bad_item);
      *out = v.items;
      return;
    }
    case Kind::kChoice: {
      need_name();
      const auto names = choice_names(f);
      const bool listed =
          f.allowed.empty() || std::find(names.begin(), names.end(), v.scalar) != names.end();
      if (listed && f.choice->set(v.scalar, f.ptr)) return;
      const std::string guess = nearest(v.scalar, names);
      throw UsageError(fmt::format("`{}` in {}: expected {}, found `{}`{}", path, where,
                                   expected(f), v.scalar,
                                   guess.empty() ? "" : fmt::format(". HINT: did you mean `{}`?", guess)));
    }
    case Kind::kSection:
      break;
  }
  throw Error(fmt::format("config: `{}` is a section, not a value", path));
}

/// Every key path of the tree ("optim.lr", "optim"), for suggestions across sections.
void all_paths(const std::vector<Field>& fields, const std::string& prefix,
               std::vector<std::string>& out) {
  for (const auto& f : fields) {
    out.push_back(prefix + f.name);
    if (f.kind == Kind::kSection) all_paths(f.children, prefix + f.name + ".", out);
  }
}

std::string last_component(const std::string& path) {
  auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

[[noreturn]] void unknown_key(const std::string& name, const std::string& prefix,
                              const std::vector<Field>& siblings, const std::vector<Field>& root,
                              const std::string& where) {
  std::vector<std::string> names;
  for (const auto& f : siblings) names.push_back(f.name);
  std::string path = prefix + name;
  std::string guess = nearest(name, names);
  if (!guess.empty()) guess = prefix + guess;
  if (guess.empty()) {
    // The key may exist in another section (`train.lr` for `optim.lr`).
    std::vector<std::string> paths;
    all_paths(root, "", paths);
    std::vector<std::string> lasts;
    for (const auto& p : paths) lasts.push_back(last_component(p));
    size_t best_d = std::string::npos;
    for (const auto& l : lasts) best_d = std::min(best_d, edit_distance(name, l));
    if (best_d <= (name.size() >= 6 ? 1u : 0u)) {
      // Several sections may hold the name (`dir` is checkpoint.dir and log.dir): offer all.
      std::vector<std::string> ties;
      for (size_t i = 0; i < paths.size(); ++i)
        if (edit_distance(name, lasts[i]) == best_d) ties.push_back("`" + paths[i] + "`");
      for (size_t i = 0; i < ties.size(); ++i)
        guess += (i == 0 ? "" : i + 1 == ties.size() ? " or " : ", ") + ties[i];
      throw UsageError(fmt::format("unknown key `{}` in {}; did you mean {}?", path, where, guess));
    }
  }
  if (!guess.empty())
    throw UsageError(fmt::format("unknown key `{}` in {}; did you mean `{}`?", path, where, guess));
  std::string scope = prefix.empty() ? std::string("at the top level")
                                     : fmt::format("in `{}`", prefix.substr(0, prefix.size() - 1));
  throw UsageError(fmt::format(
      "unknown key `{}` in {}. Valid keys {}: {}. HINT: `retclip config show` prints every key",
      path, where, scope, child_names(siblings)));
}

const Field* find(const std::vector<Field>& fields, const std::string& name) {
  for (const auto& f : fields)
    if (f.name == name) return &f;
  return nullptr;
}

// ---------------------------------------------------------------------------- YAML

std::string yaml_where(const std::string& origin, const YAML::Mark& mark) {
  return mark.line >= 0 ? fmt::format("{} line {}", origin, mark.line + 1) : origin;
}

/// Where the second document of a multi-document stream starts: the first `---` line
/// that follows content (a `---` before any key only opens the first document).
std::string second_document_where(const std::string& yaml, const std::string& origin,
                                  const YAML::Mark& fallback) {
  bool content = false;
  int line = 0;
  size_t pos = 0;
  while (pos <= yaml.size()) {
    size_t end = yaml.find('\n', pos);
    if (end == std::string::npos) end = yaml.size();
    std::string l = yaml.substr(pos, end - pos);
    if (!l.empty() && l.back() == '\r') l.pop_back();
    ++line;
    const bool marker = l.compare(0, 3, "---") == 0 && (l.size() == 3 || l[3] == ' ' || l[3] == '\t');
    if (marker && content) return fmt::format("{} line {}", origin, line);
    const size_t first = l.find_first_not_of(" \t");
    if (!marker && first != std::string::npos && l[first] != '#' && l[first] != '%')
      content = true;
    pos = end + 1;
  }
  return yaml_where(origin, fallback);
}

Raw raw_from_node(const YAML::Node& n) {
  Raw r;
  if (n.IsNull()) return r;
  if (n.IsScalar()) {
    r.type = Raw::kScalar;
    r.scalar = n.Scalar();
    r.quoted = n.Tag() == "!";
    return r;
  }
  if (n.IsMap()) {
    r.type = Raw::kMap;
    return r;
  }
  r.type = Raw::kList;
  size_t i = 0;
  for (const auto& item : n) {
    ++i;
    if (item.IsScalar()) {
      r.items.push_back(item.Scalar());
    } else if (r.bad_item.empty()) {
      r.bad_item = fmt::format("{} at item {}",
                               item.IsMap()    ? "a mapping"
                               : item.IsNull() ? "nothing"
                                               : "a nested list",
                               i);
    }
  }
  return r;
}

void apply_map(const YAML::Node& map, const std::vector<Field>& fields, const std::string& prefix,
               const std::vector<Field>& root, const std::string& origin, Origins& origins) {
  std::map<std::string, int> seen;
  for (const auto& kv : map) {
    YAML::Node key = kv.first;
    YAML::Node val = kv.second;
    std::string where = yaml_where(origin, key.Mark());
    if (!key.IsScalar())
      throw UsageError(fmt::format(
          "{}: expected a key name{}, found {}. HINT: keys are words "
          "like `lr`",
          where, prefix.empty() ? "" : " in `" + prefix.substr(0, prefix.size() - 1) + "`",
          describe(raw_from_node(key))));
    std::string name = key.Scalar();
    std::string path = prefix + name;
    int line = key.Mark().line + 1;
    auto [dup, fresh] = seen.emplace(name, line);
    if (!fresh)
      throw UsageError(
          fmt::format("duplicate key `{}` in {} (first given at line {}). HINT: "
                      "keep one of them",
                      path, where, dup->second));
    const Field* f = find(fields, name);
    if (!f) unknown_key(name, prefix, fields, root, where);
    if (f->kind == Kind::kSection) {
      if (val.IsNull()) continue;  // an empty section keeps its defaults
      if (!val.IsMap())
        throw UsageError(fmt::format(
            "`{}` in {}: expected a section (a mapping with keys such as {}), found {}. HINT: "
            "indent its keys under `{}:`",
            path, where, child_names(f->children), describe(raw_from_node(val)), name));
      apply_map(val, f->children, path + ".", root, origin, origins);
      continue;
    }
    assign(*f, path, where, raw_from_node(val));
    origins[path] = where;
  }
}

/// Line and column (1-based) of the first byte that is not valid UTF-8, or {0, 0}.
std::pair<size_t, size_t> find_bad_utf8(const std::string& s) {
  size_t line = 1, col = 1, i = 0, n = s.size();
  auto cont = [&](size_t k) { return k < n && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80; };
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = cont(i + 1) ? 2 : 0;
    } else if (c >= 0xE0 && c <= 0xEF) {
      auto c1 = i + 1 < n ? static_cast<unsigned char>(s[i + 1]) : 0;
      bool ok =
          cont(i + 1) && cont(i + 2) && !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 > 0x9F);
      len = ok ? 3 : 0;
    } else if (c >= 0xF0 && c <= 0xF4) {
      auto c1 = i + 1 < n ? static_cast<unsigned char>(s[i + 1]) : 0;
      bool ok = cont(i + 1) && cont(i + 2) && cont(i + 3) && !(c == 0xF0 && c1 < 0x90) &&
                !(c == 0xF4 && c1 > 0x8F);
      len = ok ? 4 : 0;
    }
    if (len == 0) return {line, col};
    if (c == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
    i += len;
  }
  return {0, 0};
}

// ---------------------------------------------------------------------- overrides

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

bool strip_quotes(std::string& s) {
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) {
    s = s.substr(1, s.size() - 2);
    return true;
  }
  return false;
}

[[noreturn]] void bad_override(const std::string& text, const std::string& why) {
  throw UsageError(
      fmt::format("bad override `--set {}`: {}. HINT: write --set key=value, e.g. "
                  "--set optim.lr=1e-4 or --set optim.betas=[0.9,0.999]",
                  text, why));
}

Raw raw_from_text(const std::string& text, const std::string& value) {
  Raw r;
  std::string v = trim(value);
  if (v.empty()) return r;
  if (v.front() == '[' || v.back() == ']') {
    if (v.front() != '[' || v.back() != ']' || v.size() < 2)
      bad_override(text, "a list must be written [a,b,...] with both brackets");
    r.type = Raw::kList;
    std::string inner = trim(v.substr(1, v.size() - 2));
    if (inner.empty()) return r;
    size_t start = 0;
    while (true) {
      size_t comma = inner.find(',', start);
      std::string item =
          trim(inner.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (item.empty()) bad_override(text, "the list has an empty item");
      strip_quotes(item);
      r.items.push_back(item);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return r;
  }
  r.type = Raw::kScalar;
  r.quoted = strip_quotes(v);
  r.scalar = v;
  return r;
}

void apply_override(const std::string& text, const std::vector<Field>& root, Origins& origins) {
  size_t eq = text.find('=');
  if (eq == std::string::npos) bad_override(text, "there is no '=' between the key and the value");
  std::string key = trim(text.substr(0, eq));
  if (key.empty()) bad_override(text, "the key before '=' is empty");
  std::string where = "--set " + text;
  const std::vector<Field>* fields = &root;
  std::string prefix;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string name =
        key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (name.empty()) bad_override(text, fmt::format("the key `{}` has an empty part", key));
    const Field* f = find(*fields, name);
    if (!f) unknown_key(name, prefix, *fields, root, where);
    std::string path = prefix + name;
    if (dot == std::string::npos) {
      if (f->kind == Kind::kSection)
        throw UsageError(fmt::format(
            "`{}` in {} is a section, not a value; set one of its keys ({}), e.g. --set {}.{}=...",
            path, where, child_names(f->children), path, f->children.front().name));
      assign(*f, path, where, raw_from_text(text, text.substr(eq + 1)));
      origins[path] = where;
      return;
    }
    if (f->kind != Kind::kSection)
      throw UsageError(
          fmt::format("unknown key `{}` in {}: `{}` is a value, not a section. "
                      "HINT: set it with --set {}=...",
                      key, where, path, path));
    fields = &f->children;
    prefix = path + ".";
    start = dot + 1;
  }
}

// ------------------------------------------------------------------------ to_yaml

bool plain_ok(const std::string& s) {
  if (s.empty()) return false;
  auto c0 = static_cast<unsigned char>(s[0]);
  if (!(std::isalnum(c0) || s[0] == '_' || s[0] == '/')) return false;
  if (s.back() == ' ') return false;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (!(std::isalnum(c) || ch == '_' || ch == '-' || ch == '.' || ch == '/' || ch == ' ' ||
          ch == '+'))
      return false;
  }
  std::string lower;
  for (char ch : s) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const std::set<std::string> reserved{"true", "false", "yes", "no",  "on",
                                              "off",  "y",     "n",   "null"};
  if (reserved.count(lower)) return false;
  int64_t i;
  double d;
  return !parse_int(s, i) && !parse_double(s, d);
}

std::string quote(const std::string& s) {
  if (plain_ok(s)) return s;
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (ch == '"')
      out += "\\\"";
    else if (ch == '\\')
      out += "\\\\";
    else if (ch == '\n')
      out += "\\n";
    else if (ch == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7F)
      out += fmt::format("\\x{:02X}", c);
    else
      out += ch;
  }
  return out + "\"";
}

// A leaf's value as to_yaml writes it (without the leading space).
std::string value_text(const Field& f) {
  switch (f.kind) {
    case Kind::kSection:
      return "";
    case Kind::kInt:
      return fmt::format("{}", *static_cast<const int64_t*>(f.ptr));
    case Kind::kUInt:
      return fmt::format("{}", *static_cast<const uint64_t*>(f.ptr));
    case Kind::kDouble:
      return format_double(*static_cast<const double*>(f.ptr));
    case Kind::kBool:
      return *static_cast<const bool*>(f.ptr) ? "true" : "false";
    case Kind::kString:
      return quote(*static_cast<const std::string*>(f.ptr));
    case Kind::kChoice:
      return f.choice->get(f.ptr);
    case Kind::kDoubleArray: {
      const auto* a = static_cast<const double*>(f.ptr);
      std::string out = "[";
      for (size_t i = 0; i < f.size; ++i) out += (i ? ", " : "") + format_double(a[i]);
      return out + "]";
    }
    case Kind::kStringList: {
      const auto& v = *static_cast<const std::vector<std::string>*>(f.ptr);
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) {
        // Inside a flow list a comma or bracket would split the item: quote those too.
        std::string q = quote(v[i]);
        if (q.front() != '"' && q.find_first_of(",[]{}") != std::string::npos)
          q = "\"" + q + "\"";
        out += (i ? ", " : "") + q;
      }
      return out + "]";
    }
  }
  return "";
}

void emit(const std::vector<Field>& fields, int indent, std::string& out) {
  std::string pad(static_cast<size_t>(indent), ' ');
  for (const auto& f : fields) {
    out += pad + f.name + ":";
    if (f.kind == Kind::kSection) {
      out += "\n";
      emit(f.children, indent + 2, out);
      continue;
    }
    out += " " + value_text(f) + "\n";
  }
}

// Both trees come from schema() of two Configs, so they have the same shape.
void diff_fields(const std::vector<Field>& a, const std::vector<Field>& b,
                 const std::string& prefix, std::vector<ConfigChange>& out) {
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string key = prefix.empty() ? a[i].name : prefix + "." + a[i].name;
    if (a[i].kind == Kind::kSection) {
      diff_fields(a[i].children, b[i].children, key, out);
      continue;
    }
    std::string before = value_text(a[i]), after = value_text(b[i]);
    if (before != after) out.push_back({key, std::move(before), std::move(after)});
  }
}

Config finish(Config cfg, const std::vector<std::string>& overrides, Origins& origins) {
  auto root = schema(cfg);
  for (const auto& o : overrides) apply_override(o, root, origins);
  validate_with(cfg, origins);
  return cfg;
}

}  // namespace

Config load(const std::string& path, const std::vector<std::string>& overrides) {
  if (path.empty()) {
    Origins origins;
    return finish(Config{}, overrides, origins);
  }
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st))
    throw UsageError(
        fmt::format("config file `{}` not found (current directory {}). HINT: "
                    "configs/ holds ret-clip-vitb16.yaml and tiny-cpu.yaml",
                    path, std::filesystem::current_path(ec).string()));
  if (std::filesystem::is_directory(st))
    throw UsageError(fmt::format("config file `{}` is a directory. HINT: pass a .yaml file", path));
  return load_string(util::read_file(path), path, overrides);
}

Config load_string(const std::string& yaml, const std::string& origin,
                   const std::vector<std::string>& overrides) {
  auto [bad_line, bad_col] = find_bad_utf8(yaml);
  if (bad_line != 0)
    throw UsageError(
        fmt::format("{} line {} column {}: bytes that are not UTF-8. HINT: save the "
                    "file as UTF-8",
                    origin, bad_line, bad_col));
  if (yaml.find_first_not_of(" \t\r\n") == std::string::npos)
    throw UsageError(
        fmt::format("config file {} is empty. HINT: start from configs/tiny-cpu.yaml "
                    "or `retclip config show`",
                    origin));
  YAML::Node root;
  try {
    // LoadAll, not Load: Load returns the first document and drops the rest unread.
    std::vector<YAML::Node> docs = YAML::LoadAll(yaml);
    if (!docs.empty()) root = docs.front();
    for (size_t i = 1; i < docs.size(); ++i) {
      if (docs[i].IsNull()) continue;  // a trailing `---` with nothing after it
      throw UsageError(fmt::format(
          "{}: a second YAML document starts here (`---` after the first document's keys); "
          "retclip reads one document per config file and would ignore its keys. HINT: "
          "delete the `---` line so that the keys join the first document, or move them "
          "into their own file",
          second_document_where(yaml, origin, docs[i].Mark())));
    }
  } catch (const YAML::Exception& e) {
    throw UsageError(
        fmt::format("YAML syntax error in {}: {}. HINT: check the indentation "
                    "(spaces, not tabs) and the quotes on that line",
                    yaml_where(origin, e.mark), e.msg));
  }
  if (root.IsNull())
    throw UsageError(
        fmt::format("config file {} is empty (only comments). HINT: start from "
                    "configs/tiny-cpu.yaml or `retclip config show`",
                    origin));
  Config cfg;
  auto fields = schema(cfg);
  if (!root.IsMap())
    throw UsageError(fmt::format(
        "{}: expected a mapping of sections ({}) at the top level, "
        "found {}",
        yaml_where(origin, root.Mark()), child_names(fields), describe(raw_from_node(root))));
  Origins origins;
  try {
    apply_map(root, fields, "", fields, origin, origins);
  } catch (const YAML::Exception& e) {
    throw UsageError(fmt::format("YAML error in {}: {}", yaml_where(origin, e.mark), e.msg));
  }
  return finish(std::move(cfg), overrides, origins);
}

void validate(const Config& cfg) {
  validate_with(cfg, {});
}

std::string to_yaml(const Config& cfg) {
  Config copy = cfg;
  std::string out = "# retclip resolved config (defaults < YAML file < --set overrides)\n";
  emit(schema(copy), 0, out);
  return out;
}

std::vector<ConfigChange> diff(const Config& a, const Config& b) {
  Config ca = a, cb = b;
  std::vector<ConfigChange> out;
  diff_fields(schema(ca), schema(cb), "", out);
  return out;
}

std::string hash(const Config& cfg) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64
  for (unsigned char c : to_yaml(cfg)) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace retclip::config
