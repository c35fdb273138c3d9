// Readers for labelled downstream sets (manifest label columns, RETFound folders) and
// the stratified split draw; rows that cannot be used follow data.on_bad_sample.
#include "retclip/data/labels.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "retclip/data/manifest.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::data {

namespace fs = std::filesystem;

std::vector<int64_t> LabelledSet::indices(const std::string& split) const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].split == split) out.push_back(static_cast<int64_t>(i));
  return out;
}

std::string LabelledSet::split_hash(const std::string& split) const {
  std::vector<std::string> ids;
  for (int64_t i : indices(split)) ids.push_back(items[i].id);
  std::sort(ids.begin(), ids.end());
  uint64_t h = 1469598103934665603ull;
  for (const auto& id : ids) {
    for (unsigned char c : id + '\n') h = (h ^ c) * 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<std::string> parse_class_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    size_t a = cur.find_first_not_of(" \t"), b = cur.find_last_not_of(" \t");
    if (a != std::string::npos) out.push_back(cur.substr(a, b - a + 1));
    cur.clear();
  };
  for (char c : s) {
    if (c == ',')
      flush();
    else
      cur += c;
  }
  flush();
  return out;
}

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "train" | "val" | "test", or "" for a name that is none of them.
std::string normalise_split(const std::string& s) {
  const std::string l = lower(trim(s));
  if (l == "train" || l == "training") return "train";
  if (l == "val" || l == "valid" || l == "validation" || l == "dev") return "val";
  if (l == "test" || l == "testing") return "test";
  return "";
}

struct Row {
  std::map<std::string, std::string> f;
  std::string origin;
};

// Rows of a CSV or JSONL manifest, with the column names seen.
std::vector<Row> read_rows(const std::string& path, std::set<std::string>* columns) {
  RETCLIP_CHECK_USAGE(fs::is_regular_file(path), "labelled set '", path,
                      "' is not a file or folder. HINT: pass a manifest (.csv/.jsonl) or a "
                      "folder <root>/{train,val,test}/<class>/ with --data");
  const std::string text = util::read_file(path);
  const std::string name = fs::path(path).filename().string();
  std::vector<Row> rows;
  const std::string ext = lower(fs::path(path).extension().string());
  if (ext == ".jsonl" || ext == ".ndjson") {
    int64_t line = 0;
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string l = trim(text.substr(pos, end - pos));
      ++line;
      pos = end + 1;
      if (l.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(l);
      } catch (const std::exception& e) {
        throw UsageError(str_cat(name, " row ", line, ": not a JSON object (", e.what(),
                                 "). HINT: one JSON object per line"));
      }
      RETCLIP_CHECK_USAGE(j.is_object(), name, " row ", line, ": expected a JSON object");
      Row r;
      r.origin = str_cat(name, " row ", line);
      for (auto& el : j.items()) {
        const auto& v = el.value();
        columns->insert(el.key());
        r.f[el.key()] = v.is_string() ? v.get<std::string>() : v.is_null() ? "" : v.dump();
      }
      rows.push_back(std::move(r));
    }
    return rows;
  }
  RETCLIP_CHECK_USAGE(ext == ".csv", "labelled set '", path, "' has extension '", ext,
                      "'. HINT: use a .csv or .jsonl manifest, or a class folder layout");
  auto recs = data::parse_csv(text);
  RETCLIP_CHECK_USAGE(!recs.empty(), path, " is empty. HINT: the first line names the columns");
  std::vector<std::string> header;
  for (const auto& h : recs[0].fields) header.push_back(trim(h));
  columns->insert(header.begin(), header.end());
  for (size_t i = 1; i < recs.size(); ++i) {
    Row r;
    r.origin = str_cat(name, " row ", recs[i].line);
    RETCLIP_CHECK_USAGE(recs[i].error.empty(), r.origin, ": ", recs[i].error);
    if (recs[i].fields.size() != header.size()) {
      r.f["__error"] =
          str_cat("has ", recs[i].fields.size(), " fields but the header has ", header.size());
    }
    for (size_t c = 0; c < header.size() && c < recs[i].fields.size(); ++c)
      r.f[header[c]] = recs[i].fields[c];
    rows.push_back(std::move(r));
  }
  return rows;
}

class BadRows {
 public:
  BadRows(data::BadSamplePolicy p, std::vector<data::BadSample>* out) : policy_(p), out_(out) {}
  void add(const std::string& origin, const std::string& reason) {
    if (policy_ == data::BadSamplePolicy::kFail)
      throw UsageError(str_cat(origin, ": ", reason,
                               ". HINT: fix or remove the row, or set data.on_bad_sample: skip "
                               "(--on-bad-sample skip)"));
    out_->push_back({origin, reason, ""});
  }

 private:
  data::BadSamplePolicy policy_;
  std::vector<data::BadSample>* out_;
};

bool is_flag_string(const std::string& v, size_t classes) {
  return classes >= 2 && v.size() == classes &&
         std::all_of(v.begin(), v.end(), [](char c) { return c == '0' || c == '1'; });
}

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return "";
  fs::path q(p);
  return q.is_absolute() ? q.string() : (base / q).lexically_normal().string();
}

// One label value (class name or flag string) into target / label; "" on success.
std::vector<std::string> split_names(const std::string& v) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= v.size()) {
    size_t end = v.find(';', pos);
    if (end == std::string::npos) end = v.size();
    std::string n = trim(v.substr(pos, end - pos));
    if (!n.empty()) out.push_back(n);
    pos = end + 1;
  }
  return out;
}

std::string parse_value(const std::string& raw, const std::vector<std::string>& classes, bool flags,
                        bool list, LabelledItem* it) {
  const std::string v = trim(raw);
  if (v.empty()) return "has no label";
  it->target.assign(classes.size(), 0.0f);
  if (list) {
    for (const auto& n : split_names(v)) {
      auto pos = std::find(classes.begin(), classes.end(), n);
      if (pos == classes.end())
        return str_cat("label '", n, "' is not one of the declared classes");
      it->target[pos - classes.begin()] = 1.0f;
    }
    return "";
  }
  if (flags) {
    if (!is_flag_string(v, classes.size()))
      return str_cat("label '", v, "' is not ", classes.size(), " 0/1 flags (one per class ",
                     "of the declared order)");
    for (size_t c = 0; c < v.size(); ++c) it->target[c] = v[c] == '1' ? 1.0f : 0.0f;
    return "";
  }
  auto pos = std::find(classes.begin(), classes.end(), v);
  if (pos == classes.end()) return str_cat("label '", v, "' is not one of the declared classes");
  it->label = pos - classes.begin();
  it->target[it->label] = 1.0f;
  return "";
}

LabelledSet read_manifest_set(const LabelOptions& o) {
  std::set<std::string> cols;
  std::vector<Row> rows = read_rows(o.path, &cols);
  const fs::path base = fs::path(o.path).parent_path();
  LabelledSet set;
  set.source = o.path;
  BadRows bad(o.policy, &set.bad);
  const bool eye_lists = cols.count("left_labels") || cols.count("right_labels");
  const bool eye_cols = cols.count("left_label") || cols.count("right_label") || eye_lists;
  const bool has_flags = cols.count("labels") > 0, has_name = cols.count("label") > 0;
  const bool has_list = cols.count("patient_labels") > 0;
  bool per_class = !o.classes.empty();
  for (const auto& c : o.classes) per_class = per_class && cols.count(c);
  const bool patient_cols = has_flags || has_list || has_name || per_class;
  config::Level level = o.level;
  if (level == config::Level::kAuto)
    level = patient_cols ? config::Level::kPatient : config::Level::kEye;
  const bool eye_level = level == config::Level::kEye;
  RETCLIP_CHECK_USAGE(eye_level ? eye_cols : patient_cols, o.path, " has no ",
                      config::name(level), "-level label column (looked for ",
                      eye_level ? "left_label, right_label, left_labels, right_labels"
                                     : "labels (flags), patient_labels (names joined by ';'), "
                                       "label (class name), or one column per class of " +
                                           label_option(o, "classes"),
                      "). HINT: add the column, or choose ",
                      label_option(o, "level", eye_level ? "patient" : "eye"));
  RETCLIP_CHECK_USAGE(cols.count("left_image") || cols.count("right_image"), o.path,
                      " has neither a left_image nor a right_image column. HINT: the native "
                      "manifest names the eyes' images in left_image, right_image");
  set.level = level;
  const std::string id_col = cols.count("patient_id") ? "patient_id" : "";

  // Value kind and class order.
  std::vector<std::string> label_cols;
  bool flags = false, columns_per_class = false, list = false;
  if (!eye_level) {
    if (has_flags)
      label_cols = {"labels"}, flags = true;
    else if (has_list)
      label_cols = {"patient_labels"}, list = true;
    else if (has_name)
      label_cols = {"label"};
    else
      columns_per_class = true;
  } else if (eye_lists) {
    label_cols = {"left_labels", "right_labels"};
    list = true;
  } else {
    for (const char* c : {"left_label", "right_label"})
      if (cols.count(c)) label_cols.push_back(c);
    // Flag strings when the declared classes say so (a value of the declared length
    // made of 0/1 that is not itself a class name).
    for (const auto& r : rows)
      for (const auto& c : label_cols) {
        auto it = r.f.find(c);
        if (it == r.f.end()) continue;
        const std::string v = trim(it->second);
        if (is_flag_string(v, o.classes.size()) &&
            std::find(o.classes.begin(), o.classes.end(), v) == o.classes.end())
          flags = true;
      }
  }
  set.classes = o.classes;
  if (flags || columns_per_class) {
    RETCLIP_CHECK_USAGE(!o.classes.empty(), o.path, ": column '",
                        label_cols.empty() ? "" : label_cols[0],
                        "' holds 0/1 flags, whose meaning needs the class order. HINT: pass ",
                        label_option(o, "classes"), " (NAME,NAME,...) in the order of the flags");
    set.multi_label = true;
  } else if (list) {
    set.multi_label = true;
  }
  if (!flags && !columns_per_class && set.classes.empty()) {
    std::set<std::string> names;
    for (const auto& r : rows)
      for (const auto& c : label_cols) {
        auto it = r.f.find(c);
        if (it == r.f.end()) continue;
        if (list)
          for (const auto& n : split_names(it->second)) names.insert(n);
        else if (!trim(it->second).empty())
          names.insert(trim(it->second));
      }
    set.classes.assign(names.begin(), names.end());
    RETCLIP_CHECK_USAGE(set.classes.size() >= 2, o.path, " has ", set.classes.size(),
                        " distinct label value(s); a classifier needs at least 2. HINT: check "
                        "the label column, or pass --classes");
  }

  const bool has_split = cols.count("split") > 0;
  std::set<std::string> ids;
  for (const auto& r : rows) {
    if (r.f.count("__error")) {
      bad.add(r.origin, r.f.at("__error"));
      continue;
    }
    auto get = [&](const std::string& k) {
      auto it = r.f.find(k);
      return it == r.f.end() ? std::string() : trim(it->second);
    };
    const std::string pid = id_col.empty() ? r.origin : get(id_col);
    if (pid.empty()) {
      bad.add(r.origin, "has an empty patient_id");
      continue;
    }
    if (!ids.insert(pid).second) {
      bad.add(r.origin, str_cat("repeats patient_id '", pid, "'"));
      continue;
    }
    std::string split;
    if (has_split) {
      split = normalise_split(get("split"));
      if (split.empty()) {
        bad.add(r.origin, str_cat("has split '", get("split"), "', expected train, val or test"));
        continue;
      }
    }
    LabelledItem proto;
    proto.patient_id = pid;
    proto.split = split;
    proto.origin = r.origin;
    proto.left.path = resolve(base, get("left_image"));
    proto.right.path = resolve(base, get("right_image"));
    if (!eye_level) {
      LabelledItem it = proto;
      it.id = pid;
      it.eye = Eye::kBoth;
      std::string err;
      if (!it.left.present() && !it.right.present())
        err = "has neither a left nor a right image";
      else if (columns_per_class) {
        it.target.assign(set.classes.size(), 0.0f);
        for (size_t c = 0; c < set.classes.size() && err.empty(); ++c) {
          const std::string v = get(set.classes[c]);
          if (v == "1" || v == "1.0")
            it.target[c] = 1.0f;
          else if (v != "0" && v != "0.0")
            err = str_cat("column '", set.classes[c], "' holds '", v, "', expected 0 or 1");
        }
      } else {
        err = parse_value(get(label_cols[0]), set.classes, flags, list, &it);
      }
      if (!err.empty()) {
        bad.add(r.origin, err);
        continue;
      }
      set.items.push_back(std::move(it));
    } else {
      for (Eye e : {Eye::kLeft, Eye::kRight}) {
        const std::string col =
            std::string(e == Eye::kLeft ? "left_label" : "right_label") + (list ? "s" : "");
        const std::string v = get(col);
        if (v.empty()) continue;  // an unlabelled eye is simply not an item
        LabelledItem it = proto;
        it.eye = e;
        it.id = pid + ":" + eye_name(e);
        if (e == Eye::kLeft)
          it.right = {};
        else
          it.left = {};
        std::string err = it.image().present() ? parse_value(v, set.classes, flags, list, &it)
                                               : str_cat("labels the ", eye_name(e),
                                                         " eye but has no ", eye_name(e), "_image");
        if (!err.empty()) {
          bad.add(r.origin + " (" + eye_name(e) + ")", err);
          continue;
        }
        set.items.push_back(std::move(it));
      }
    }
  }
  return set;
}

bool is_image_file(const fs::path& p) {
  const std::string e = lower(p.extension().string());
  return e == ".jpg" || e == ".jpeg" || e == ".png" || e == ".bmp" || e == ".tif" || e == ".tiff";
}

LabelledSet read_folder_set(const LabelOptions& o) {
  LabelledSet set;
  set.source = o.path;
  set.level = config::Level::kEye;
  BadRows bad(o.policy, &set.bad);
  RETCLIP_CHECK_USAGE(o.level != config::Level::kPatient, o.path,
                      " is a class folder layout, whose images are single eyes. HINT: use "
                      "--level eye (or auto)");
  std::map<std::string, fs::path> splits;  // normalised name -> folder
  for (const auto& d : fs::directory_iterator(o.path)) {
    if (!d.is_directory()) continue;
    const std::string s = normalise_split(d.path().filename().string());
    if (!s.empty()) splits[s] = d.path();
  }
  RETCLIP_CHECK_USAGE(!splits.empty(), o.path,
                      " holds no train, val or test folder. HINT: the folder layout is "
                      "<root>/{train,val,test}/<class name>/<image>");
  std::set<std::string> names;
  for (const auto& [s, dir] : splits)
    for (const auto& d : fs::directory_iterator(dir))
      if (d.is_directory()) names.insert(d.path().filename().string());
  set.classes = o.classes;
  if (set.classes.empty()) set.classes.assign(names.begin(), names.end());  // as ImageFolder
  RETCLIP_CHECK_USAGE(set.classes.size() >= 2, o.path, " has ", set.classes.size(),
                      " class folder(s); a classifier needs at least 2. HINT: one folder per "
                      "class under each split folder");
  for (const auto& [s, dir] : splits) {
    std::vector<fs::path> files;
    for (const auto& d : fs::directory_iterator(dir)) {
      if (!d.is_directory()) continue;
      const std::string cls = d.path().filename().string();
      auto pos = std::find(set.classes.begin(), set.classes.end(), cls);
      if (pos == set.classes.end()) {
        bad.add(d.path().string(), "is a class folder not among --classes");
        continue;
      }
      for (const auto& f : fs::directory_iterator(d.path()))
        if (f.is_regular_file() && f.path().filename().string()[0] != '.')
          files.push_back(f.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      const std::string rel = fs::relative(f, o.path).generic_string();
      if (!is_image_file(f)) {
        bad.add(rel, "is not an image file (.jpg, .jpeg, .png, .bmp, .tif)");
        continue;
      }
      LabelledItem it;
      it.id = rel;
      it.patient_id = rel;
      it.eye = Eye::kUnknown;
      it.left.path = f.string();
      it.split = s;
      it.origin = rel;
      const std::string cls = f.parent_path().filename().string();
      it.label = std::find(set.classes.begin(), set.classes.end(), cls) - set.classes.begin();
      it.target.assign(set.classes.size(), 0.0f);
      it.target[it.label] = 1.0f;
      set.items.push_back(std::move(it));
    }
  }
  return set;
}

// Moves round(fraction * |stratum|) units of each stratum from `from` to `to`. A unit
// is a patient (both eyes go together, so no patient is on both sides) or, in the
// folder layout, an image. Strata: the class (single-label) or the first positive label.
void draw_split(LabelledSet& set, const std::string& from, const std::string& to, double fraction,
                uint64_t seed) {
  std::map<std::string, std::vector<int64_t>> units;  // patient -> items
  for (int64_t i : set.indices(from)) units[set.items[i].patient_id].push_back(i);
  std::map<int64_t, std::vector<std::string>> strata;
  for (const auto& [pid, items] : units) {
    const auto& t = set.items[items[0]].target;
    int64_t key = std::find(t.begin(), t.end(), 1.0f) - t.begin();
    strata[key].push_back(pid);
  }
  std::mt19937_64 rng(seed);
  int64_t moved = 0;
  for (auto& [key, pids] : strata) {
    std::shuffle(pids.begin(), pids.end(), rng);
    const int64_t take = std::llround(fraction * static_cast<double>(pids.size()));
    for (int64_t k = 0; k < take; ++k, ++moved)
      for (int64_t i : units[pids[k]]) set.items[i].split = to;
  }
  // Small sets: make sure the drawn split is not empty when it can be drawn at all.
  if (moved == 0 && units.size() >= 2 && fraction > 0) {
    auto& pids =
        strata.rbegin()->second.size() > 1 ? strata.rbegin()->second : strata.begin()->second;
    for (int64_t i : units[pids[0]]) set.items[i].split = to;
  }
}

}  // namespace

std::string label_option(const LabelOptions& o, const std::string& key, const std::string& value) {
  if (!o.option_section.empty()) {
    const std::string k = o.option_section + "." + key;
    return value.empty() ? k : "--set " + k + "=" + value;
  }
  std::string flag = "--" + key;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return value.empty() ? flag : flag + " " + value;
}

std::string split_counts(const LabelledSet& set) {
  std::string s;
  for (const char* split : {"train", "val", "test"}) {
    if (!s.empty()) s += ", ";
    s += str_cat(split, " ", set.indices(split).size());
    if ((std::string(split) == "val" && set.val_drawn) ||
        (std::string(split) == "test" && set.test_drawn))
      s += " (drawn)";
  }
  return s;
}

void require_splits(const LabelledSet& set, const LabelOptions& o,
                    const std::vector<std::string>& needed, const std::string& who) {
  std::vector<std::string> missing;
  for (const auto& split : needed)
    if (set.indices(split).empty()) missing.push_back(split);
  if (missing.empty()) return;
  std::string need, miss;
  for (const auto& n : needed) need += (need.empty() ? "" : ", ") + n;
  for (const auto& m : missing) miss += (miss.empty() ? "" : ", ") + m;
  // A flag on the command line, a boolean key in a config.
  const std::string ignore_flag = o.option_section.empty()
                                      ? label_option(o, "ignore_split")
                                      : label_option(o, "ignore_split", "true");
  std::string hint;
  const bool only_val_missing = missing.size() == 1 && missing[0] == "val";
  if (only_val_missing) {
    hint =
        str_cat("draw a validation split from train with ", label_option(o, "val_fraction", "0.2"));
  } else if (o.ignore_split || set.test_drawn) {
    hint = str_cat("the set is too small to draw every split; raise ",
                   label_option(o, "test_fraction", "0.3"), " / ",
                   label_option(o, "val_fraction", "0.2"), ", or label more rows");
  } else if (o.can_ignore_split) {
    hint = str_cat(ignore_flag,
                   " ignores the split column and draws train, val and test from every row "
                   "(by patient, stratified; with ",
                   label_option(o, "test_fraction", "0.3"), " and ",
                   label_option(o, "val_fraction", "0.2"), "), or mark rows ", miss,
                   " in the split column");
  } else {
    hint = str_cat("mark rows ", miss, " in the split column, or remove the split column and ",
                   "draw the splits with ", label_option(o, "test_fraction", "0.3"), " and ",
                   label_option(o, "val_fraction", "0.2"));
  }
  const bool drawn = set.test_drawn || set.val_drawn || o.ignore_split;
  throw UsageError(
      str_cat(who, " needs ", need, " items, but ", set.source, " has ", split_counts(set), " at ",
              config::name(set.level), " level (no ", miss, " item", missing.size() > 1 ? "s" : "", "; splits ",
              drawn ? "drawn by patient" : "as its split column gives them", "). HINT: ", hint));
}

LabelledSet read_labelled(const LabelOptions& o) {
  RETCLIP_CHECK_USAGE(!o.path.empty(), "no labelled set given. HINT: pass ",
                      label_option(o, "data", "PATH"));
  RETCLIP_CHECK_USAGE(fs::exists(o.path), "labelled set '", o.path, "' (", label_option(o, "data"),
                      ") does not exist. HINT: check the path (relative ",
                      "paths start in the current directory, ", fs::current_path().string(), ")");
  RETCLIP_CHECK_USAGE(
      o.val_fraction >= 0 && o.val_fraction < 1 && o.test_fraction >= 0 && o.test_fraction < 1,
      "split fractions must lie in [0, 1) but got val ", o.val_fraction, ", test ", o.test_fraction,
      ". HINT: ", label_option(o, "val_fraction", "0.2"), ", ",
      label_option(o, "test_fraction", "0.3"));
  LabelledSet set = fs::is_directory(o.path) ? read_folder_set(o) : read_manifest_set(o);
  RETCLIP_CHECK_USAGE(!set.items.empty(), o.path, " yields no labelled item (", set.bad.size(),
                      " bad rows). HINT: check the label columns and image paths");
  if (!set.bad.empty())
    log::warn("{}: {} bad row(s) skipped (data.on_bad_sample: skip); first: {}: {}", o.path,
              set.bad.size(), set.bad[0].origin, set.bad[0].reason);
  set.split_seed = o.seed;
  if (o.ignore_split)
    for (auto& it : set.items) it.split.clear();
  if (!o.draw_splits) return set;
  const bool any_split = std::any_of(set.items.begin(), set.items.end(),
                                     [](const LabelledItem& it) { return !it.split.empty(); });
  if (!any_split) {
    RETCLIP_CHECK_USAGE(o.test_fraction > 0 || !o.ignore_split, label_option(o, "ignore_split"),
                        " draws every split of ", o.path, " anew, and the test split needs a ",
                        "fraction. HINT: add ", label_option(o, "test_fraction", "0.3"));
    RETCLIP_CHECK_USAGE(o.test_fraction > 0, o.path,
                        " has no split column, so there is no test split. HINT: add a split "
                        "column (train/val/test), or draw one with ",
                        label_option(o, "test_fraction", "0.3"));
    log::info("{}: test split drawn ({} of the patients, seed {})", o.path, o.test_fraction,
              o.seed);
    for (auto& it : set.items) it.split = "train";
    draw_split(set, "train", "test", o.test_fraction, o.seed);
    set.test_drawn = true;
  }
  if (set.indices("val").empty() && o.val_fraction > 0) {
    draw_split(set, "train", "val", o.val_fraction, o.seed + 1);
    set.val_drawn = true;
  }
  return set;
}

}  // namespace retclip::data
