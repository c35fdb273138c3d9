// The benchmark (see benchmark.hpp). Sections: the config file, the cells and their keys,
// the encoders and sets (read once), one cell per protocol, the run.
#include "retclip/eval/benchmark.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "retclip/data/manifest.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/eval/metrics.hpp"
#include "retclip/eval/probe.hpp"
#include "retclip/eval/report.hpp"
#include "retclip/eval/zeroshot.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"
#include "retclip/version.hpp"

namespace retclip::eval {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string BenchModel::kind() const {
  if (!weights.empty()) return "weights";
  if (!vision.empty()) return "vision";
  return "random";
}

const BenchModel* BenchConfig::model(const std::string& name) const {
  for (const auto& m : models)
    if (m.name == name) return &m;
  return nullptr;
}

const BenchSet* BenchConfig::set(const std::string& name) const {
  for (const auto& s : sets)
    if (s.name == name) return &s;
  return nullptr;
}

// ---- the config file --------------------------------------------------------------------

namespace {

/// Reads one YAML file with errors that name the file, line, key path and a hint.
class BenchYaml {
 public:
  explicit BenchYaml(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void fail(const YAML::Node& n, const std::string& key, const std::string& msg,
                         const std::string& hint) const {
    const std::string where =
        n && n.Mark().line >= 0 ? fmt::format("{}:{}", origin_, n.Mark().line + 1) : origin_;
    throw UsageError(fmt::format("{}: {}: {}. HINT: {}", where, key, msg, hint));
  }

  void keys(const YAML::Node& n, const std::string& key, const std::vector<std::string>& allowed,
            const std::string& hint) const {
    if (!n.IsMap()) fail(n, key, "expected a mapping", hint);
    for (const auto& kv : n) {
      const std::string k = kv.first.as<std::string>();
      if (std::find(allowed.begin(), allowed.end(), k) == allowed.end())
        fail(kv.first, key.empty() ? k : key + "." + k,
             fmt::format("unknown key (expected one of {})", fmt::join(allowed, ", ")), hint);
    }
  }

  template <typename T>
  T get(const YAML::Node& parent, const std::string& key, const std::string& name, T fallback,
        const std::string& what) const {
    const YAML::Node n = parent[name];
    if (!n || n.IsNull()) return fallback;
    try {
      return n.as<T>();
    } catch (const YAML::Exception&) {
      fail(n, key + "." + name, "expected " + what + " but got '" + YAML::Dump(n) + "'",
           "see docs/EVALUATION.md, Benchmark");
    }
  }

  /// A name of one of config's enums (level, feature, on_bad_sample), as the enum.
  template <typename E>
  E name(const YAML::Node& parent, const std::string& key, const std::string& field,
         E fallback) const {
    const YAML::Node n = parent[field];
    if (!n || n.IsNull()) return fallback;
    const std::string s = n.IsScalar() ? n.as<std::string>() : YAML::Dump(n);
    E e = fallback;
    if (!n.IsScalar() || !config::from_name(s, e))
      fail(n, key + "." + field,
           fmt::format("expected one of {} but got '{}'", fmt::join(config::names<E>(), ", "), s),
           fmt::format("{}: {}", field, config::name(fallback)));
    return e;
  }

  template <typename T>
  std::vector<T> list(const YAML::Node& parent, const std::string& key, const std::string& name,
                      std::vector<T> fallback, const std::string& what) const {
    const YAML::Node n = parent[name];
    if (!n || n.IsNull()) return fallback;
    if (!n.IsSequence())
      fail(n, key + "." + name, "expected a list of " + what, "write [a, b] or one item per line");
    std::vector<T> out;
    for (const auto& item : n) {
      try {
        out.push_back(item.as<T>());
      } catch (const YAML::Exception&) {
        fail(item, key + "." + name, "expected " + what + " but got '" + YAML::Dump(item) + "'",
             "see docs/EVALUATION.md, Benchmark");
      }
    }
    return out;
  }

  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
};

bool bench_name_ok(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return false;
  return s != "." && s != "..";
}

/// True when a protocol key is present and not `false`.
bool protocol_on(const YAML::Node& n) {
  if (!n || n.IsNull()) return n && n.IsNull();
  if (n.IsScalar()) return n.as<std::string>() != "false";
  return true;
}

/// Keys the benchmark sets itself in a fine-tuning cell's config.
const std::vector<std::string>& bench_owned_keys() {
  static const std::vector<std::string> k = {"finetune.data",
                                             "finetune.classes",
                                             "finetune.level",
                                             "finetune.val_fraction",
                                             "finetune.test_fraction",
                                             "finetune.split_seed",
                                             "finetune.init",
                                             "finetune.epochs",
                                             "finetune.batch_size",
                                             "train.seed",
                                             "train.device",
                                             "train.threads",
                                             "data.workers",
                                             "data.on_bad_sample",
                                             "data.image_size",
                                             "data.mean",
                                             "data.std",
                                             "data.preprocess",
                                             "log.dir",
                                             "model"};
  return k;
}

}  // namespace

BenchConfig parse_bench_config(const std::string& text, const std::string& origin) {
  BenchYaml y(origin);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw UsageError(fmt::format("{}:{}: not valid YAML: {}. HINT: check the indentation there",
                                 origin, e.mark.line + 1, e.msg));
  }
  const std::string doc_hint = "see docs/EVALUATION.md, Benchmark";
  y.keys(root, "", {"models", "sets", "protocols", "options"}, doc_hint);
  BenchConfig c;
  c.source = origin;

  // models
  const YAML::Node models = root["models"];
  if (!models || !models.IsSequence() || models.size() == 0)
    y.fail(models ? models : root, "models", "expected a list of at least one model",
           "models: [{name: retclip, weights: runs/demo/export}, {name: random, random: retclip}]");
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string key = fmt::format("models[{}]", i);
    const YAML::Node n = models[i];
    y.keys(n, key,
           {"name", "weights", "vision", "preset", "image_size", "mean", "std", "random", "seed"},
           doc_hint);
    BenchModel m;
    m.name = y.get<std::string>(n, key, "name", "", "a name");
    m.weights = y.get<std::string>(n, key, "weights", "", "a path");
    m.vision = y.get<std::string>(n, key, "vision", "", "a path");
    m.preset = y.get<std::string>(n, key, "preset", m.preset, "a vision preset name");
    m.image_size = y.get<int64_t>(n, key, "image_size", 0, "an integer");
    m.random_like = y.get<std::string>(n, key, "random", "", "the name of another model");
    m.seed = y.get<uint64_t>(n, key, "seed", 0, "a non-negative integer");
    const auto mean = y.list<double>(n, key, "mean", {}, "numbers");
    const auto sd = y.list<double>(n, key, "std", {}, "numbers");
    if (!bench_name_ok(m.name))
      y.fail(n, key + ".name",
             "expected a name of letters, digits, '-', '_' or '.' but got '" + m.name + "'",
             "name: retclip (it names the table's columns and the cells' folders)");
    if (c.model(m.name))
      y.fail(n, key + ".name", "'" + m.name + "' is used twice", "give each model its own name");
    const int given = !m.weights.empty() + !m.vision.empty() + !m.random_like.empty();
    if (given != 1)
      y.fail(
          n, key, "expected exactly one of weights, vision and random",
          "weights: EXPORT_OR_CHECKPOINT_DIR, vision: CLIP_OR_TIMM_FILE, or random: OTHER_MODEL");
    if (!m.weights.empty() && !fs::exists(m.weights))
      y.fail(n[std::string("weights")], key + ".weights", "'" + m.weights + "' does not exist",
             "a retclip export (retclip export) or a checkpoint / run directory");
    if (!m.vision.empty() && !fs::exists(m.vision))
      y.fail(n[std::string("vision")], key + ".vision", "'" + m.vision + "' does not exist",
             "image-tower weights as model.init.vision takes them (docs/WEIGHTS.md)");
    if ((!mean.empty() || !sd.empty() || m.image_size) && m.vision.empty())
      y.fail(n, key, "image_size, mean and std apply to vision models only",
             "a retclip export or checkpoint records its own preprocessing");
    if ((!mean.empty() && mean.size() != 3) || (!sd.empty() && sd.size() != 3))
      y.fail(n, key, "mean and std take three numbers (R, G, B)", "mean: [0.485, 0.456, 0.406]");
    if (m.image_size < 0) y.fail(n, key + ".image_size", "expected >= 0", "image_size: 224");
    m.mean = mean;
    m.std = sd;
    c.models.push_back(m);
  }
  for (size_t i = 0; i < c.models.size(); ++i) {
    const auto& m = c.models[i];
    if (m.random_like.empty()) continue;
    const BenchModel* like = c.model(m.random_like);
    if (!like || like->kind() == "random")
      y.fail(models[i], fmt::format("models[{}].random", i),
             "'" + m.random_like + "' is not a model with weights in this file",
             "random: NAME of a weights or vision model; its shape is initialised at random");
  }

  // sets
  const YAML::Node sets = root["sets"];
  if (!sets || !sets.IsSequence() || sets.size() == 0)
    y.fail(sets ? sets : root, "sets", "expected a list of at least one labelled set",
           "sets: [{name: idrid, data: RETFound/IDRiD}]");
  for (size_t i = 0; i < sets.size(); ++i) {
    const std::string key = fmt::format("sets[{}]", i);
    const YAML::Node n = sets[i];
    y.keys(n, key,
           {"name", "data", "level", "classes", "prompts", "val_fraction", "test_fraction",
            "split_seed", "ignore_split"},
           doc_hint);
    BenchSet s;
    s.name = y.get<std::string>(n, key, "name", "", "a name");
    s.data = y.get<std::string>(n, key, "data", "", "a path");
    s.level = y.name(n, key, "level", s.level);
    s.classes = y.list<std::string>(n, key, "classes", {}, "class names");
    s.prompts = y.get<std::string>(n, key, "prompts", "", "a path");
    s.val_fraction = y.get<double>(n, key, "val_fraction", s.val_fraction, "a number");
    s.test_fraction = y.get<double>(n, key, "test_fraction", s.test_fraction, "a number");
    s.split_seed = y.get<uint64_t>(n, key, "split_seed", 0, "a non-negative integer");
    s.ignore_split = y.get<bool>(n, key, "ignore_split", false, "true or false");
    if (!bench_name_ok(s.name))
      y.fail(n, key + ".name",
             "expected a name of letters, digits, '-', '_' or '.' but got '" + s.name + "'",
             "name: idrid (it names the table's rows and the cells' folders)");
    if (c.set(s.name))
      y.fail(n, key + ".name", "'" + s.name + "' is used twice", "give each set its own name");
    if (s.data.empty() || !fs::exists(s.data))
      y.fail(n, key + ".data", "'" + s.data + "' does not exist",
             "a labelled manifest (.csv/.jsonl) or a <root>/{train,val,test}/<class>/ folder");
    if (s.val_fraction < 0 || s.val_fraction >= 1 || s.test_fraction < 0 || s.test_fraction >= 1)
      y.fail(n, key, "val_fraction and test_fraction must lie in [0, 1)", "test_fraction: 0.3");
    if (!s.prompts.empty()) {
      if (!fs::exists(s.prompts))
        y.fail(n, key + ".prompts", "'" + s.prompts + "' does not exist",
               "a prompt file as retclip zeroshot --prompts takes (configs/prompts/)");
      const PromptSet p = load_prompts(s.prompts);
      if (!s.classes.empty() && s.classes != p.classes)
        y.fail(n, key + ".classes",
               fmt::format("[{}] differ from the classes of {} ([{}])", fmt::join(s.classes, ","),
                           s.prompts, fmt::join(p.classes, ",")),
               "the prompt file lists one entry per class in the label order; drop classes to "
               "take the prompt file's");
      if (fs::is_directory(s.data))
        y.fail(n, key + ".prompts",
               "zero-shot scores an eye with its left or right text head, but the eyes of a class "
               "folder have no laterality",
               "drop prompts for this set, or use a manifest with left_label/right_label columns");
    }
    c.sets.push_back(s);
  }

  // protocols
  const YAML::Node pr = root["protocols"];
  if (!pr || !pr.IsMap())
    y.fail(pr ? pr : root, "protocols", "expected a mapping of protocols",
           "protocols: {probe: {}, few_shot: {shots: [1, 2, 4]}, zeroshot: {}, finetune: {}}");
  y.keys(pr, "protocols", {"probe", "few_shot", "zeroshot", "finetune"}, doc_hint);
  if (protocol_on(pr["probe"])) {
    c.probe.enabled = true;
    if (pr["probe"].IsMap()) {
      y.keys(pr["probe"], "protocols.probe", {"c_grid", "balanced", "select"}, doc_hint);
      c.probe.c_grid =
          y.list<double>(pr["probe"], "protocols.probe", "c_grid", c.probe.c_grid, "numbers");
      c.probe.balanced =
          y.get<bool>(pr["probe"], "protocols.probe", "balanced", false, "true or false");
      c.probe.select = y.get<std::string>(pr["probe"], "protocols.probe", "select", c.probe.select,
                                          "a metric name");
    }
  }
  if (protocol_on(pr["few_shot"])) {
    const YAML::Node f = pr["few_shot"];
    if (!f.IsMap())
      y.fail(f, "protocols.few_shot", "expected a mapping",
             "few_shot: {shots: [1, 2, 4], seeds: 5}");
    y.keys(f, "protocols.few_shot", {"shots", "seeds", "seed"}, doc_hint);
    c.few_shot.shots = y.list<int64_t>(f, "protocols.few_shot", "shots", {}, "integers");
    c.few_shot.seeds =
        y.get<int64_t>(f, "protocols.few_shot", "seeds", c.few_shot.seeds, "an integer");
    c.few_shot.seed = y.get<uint64_t>(f, "protocols.few_shot", "seed", 0, "a non-negative integer");
    if (c.few_shot.shots.empty())
      y.fail(f, "protocols.few_shot.shots", "expected at least one K", "shots: [1, 2, 4, 8, 16]");
    for (int64_t k : c.few_shot.shots)
      if (k < 1)
        y.fail(f, "protocols.few_shot.shots", fmt::format("K = {} is not positive", k),
               "shots: [1, 2, 4]");
    std::sort(c.few_shot.shots.begin(), c.few_shot.shots.end());
    c.few_shot.shots.erase(std::unique(c.few_shot.shots.begin(), c.few_shot.shots.end()),
                           c.few_shot.shots.end());
    if (c.few_shot.seeds < 1) y.fail(f, "protocols.few_shot.seeds", "expected >= 1", "seeds: 5");
  }
  c.zeroshot = protocol_on(pr["zeroshot"]);
  if (c.zeroshot && pr["zeroshot"].IsMap())
    y.keys(pr["zeroshot"], "protocols.zeroshot", {}, doc_hint);
  if (protocol_on(pr["finetune"])) {
    const YAML::Node f = pr["finetune"];
    c.finetune.enabled = true;
    if (f.IsMap()) {
      y.keys(f, "protocols.finetune", {"seeds", "epochs", "batch_size", "set"}, doc_hint);
      c.finetune.seeds = y.list<uint64_t>(f, "protocols.finetune", "seeds", c.finetune.seeds,
                                          "non-negative integers");
      c.finetune.epochs =
          y.get<int64_t>(f, "protocols.finetune", "epochs", c.finetune.epochs, "an integer");
      c.finetune.batch_size = y.get<int64_t>(f, "protocols.finetune", "batch_size",
                                             c.finetune.batch_size, "an integer");
      c.finetune.set =
          y.list<std::string>(f, "protocols.finetune", "set", {}, "key=value overrides");
    }
    if (c.finetune.seeds.empty() || c.finetune.epochs < 1 || c.finetune.batch_size < 1)
      y.fail(f, "protocols.finetune", "expected at least one seed, epochs >= 1 and batch_size >= 1",
             "finetune: {seeds: [0], epochs: 50, batch_size: 16}");
    for (const auto& o : c.finetune.set) {
      const std::string k = o.substr(0, o.find('='));
      for (const auto& owned : bench_owned_keys())
        if (k == owned || k.rfind(owned + ".", 0) == 0)
          y.fail(f["set"], "protocols.finetune.set",
                 "'" + k + "' is set by the benchmark for each cell",
                 "models, sets, seeds, epochs and batch_size say it; set recipe keys here "
                 "(finetune.blr=1e-3, finetune.warmup_epochs=0)");
    }
    try {
      config::load_string("{}", origin + " protocols.finetune.set", c.finetune.set);
    } catch (const UsageError& e) {
      y.fail(f["set"], "protocols.finetune.set", e.what(),
             "keys of the finetune section (docs/CONFIG.md)");
    }
    for (size_t i = 0; i < c.sets.size(); ++i)
      if (c.sets[i].ignore_split)
        y.fail(sets[i], fmt::format("sets[{}].ignore_split", i),
               "fine-tuning keeps a set's split column (it has no ignore_split)",
               "drop ignore_split, or give the set train/val/test splits");
  }
  if (!c.probe.enabled && c.few_shot.shots.empty() && !c.zeroshot && !c.finetune.enabled)
    y.fail(pr, "protocols", "no protocol is on", "protocols: {probe: {}}");
  if (c.zeroshot) {
    bool any = false;
    for (const auto& s : c.sets) any |= !s.prompts.empty();
    if (!any)
      y.fail(pr["zeroshot"], "protocols.zeroshot", "no set has a prompt file",
             "sets[i].prompts: configs/prompts/synth-findings.yaml, or drop zeroshot");
  }

  // options
  if (root["options"]) {
    const YAML::Node o = root["options"];
    y.keys(o, "options",
           {"feature", "bootstrap", "device", "batch", "workers", "threads", "on_bad_sample"},
           doc_hint);
    c.feature = y.name(o, "options", "feature", c.feature);
    c.bootstrap = y.get<int64_t>(o, "options", "bootstrap", c.bootstrap, "an integer");
    c.device = y.get<std::string>(o, "options", "device", c.device, "auto, cpu or cuda");
    c.batch = y.get<int64_t>(o, "options", "batch", c.batch, "an integer");
    c.workers = y.get<int64_t>(o, "options", "workers", c.workers, "an integer");
    c.threads = y.get<int64_t>(o, "options", "threads", c.threads, "an integer");
    c.on_bad_sample = y.name(o, "options", "on_bad_sample", c.on_bad_sample);
    if (c.device != "auto" && c.device != "cpu" && c.device != "cuda")
      y.fail(o, "options.device", "expected auto, cpu or cuda but got '" + c.device + "'",
             "device: auto");
    if (c.bootstrap < 0 || c.batch < 1 || c.workers < 1 || c.threads < 0)
      y.fail(o, "options", "expected bootstrap >= 0, batch >= 1, workers >= 1 and threads >= 0",
             "options: {bootstrap: 1000, batch: 64, workers: 2}");
  }
  return c;
}

BenchConfig load_bench_config(const std::string& path) {
  RETCLIP_CHECK_USAGE(fs::is_regular_file(path), "--config ", path,
                      " does not exist. HINT: a benchmark YAML such as configs/bench-smoke.yaml");
  return parse_bench_config(util::read_file(path), path);
}

// ---- the cells and their keys -----------------------------------------------------------

std::string BenchCell::dir() const {
  const std::string p = protocol == "few-shot" ? fmt::format("few-shot-k{}", shots) : protocol;
  return fmt::format("cells/{}/{}/{}-seed{}", model, set, p, seed);
}

std::string BenchCell::label() const {
  return fmt::format("{} / {} / {} / seed {}", model, set, protocol_label(protocol, shots), seed);
}

namespace {

/// Whether a weights directory gives an encoder with a text tower: an export with full
/// weights, or a checkpoint (always the whole model).
bool bench_weights_have_text(const std::string& dir) {
  const fs::path side = fs::path(dir) / "retclip.json";
  if (!fs::exists(side)) return true;
  try {
    const json j = json::parse(util::read_file(side));
    const json files = j.value("files", json::object());
    return files.contains("full");  // load_encoder reads the text tower from full only
  } catch (const std::exception&) {
    return false;
  }
}

/// Sizes and modification times of a file, or of every file under a directory: a
/// changed weights file or set makes a different key.
std::string bench_fingerprint(const std::string& path) {
  if (path.empty() || !fs::exists(path)) return "";
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const std::string& s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  };
  auto add = [&](const fs::path& p, const std::string& rel) {
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    const auto t = fs::last_write_time(p, ec).time_since_epoch().count();
    mix(fmt::format("{}|{}|{};", rel, size, static_cast<int64_t>(t)));
  };
  if (fs::is_directory(path)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) add(f, fs::relative(f, path).string());
  } else {
    add(path, "");
  }
  return fmt::format("{:016x}", h);
}

json model_json(const BenchModel& m) {
  json j = {{"kind", m.kind()}};
  if (m.kind() == "weights") j["weights"] = m.weights, j["files"] = bench_fingerprint(m.weights);
  if (m.kind() == "vision") {
    j["vision"] = m.vision;
    j["files"] = bench_fingerprint(m.vision);
    j["preset"] = m.preset;
    j["image_size"] = m.image_size;
    j["mean"] = m.mean;
    j["std"] = m.std;
  }
  if (m.kind() == "random") j["seed"] = m.seed;
  return j;
}

/// The classes a set is read with: its own, else its prompt file's (so that probe and
/// zero-shot share one label order), else empty (the sorted names).
std::vector<std::string> bench_classes(const BenchSet& s) {
  if (!s.classes.empty() || s.prompts.empty()) return s.classes;
  return load_prompts(s.prompts).classes;
}

}  // namespace

std::vector<BenchCell> bench_cells(const BenchConfig& c) {
  std::vector<BenchCell> out;
  for (const auto& m : c.models)
    for (const auto& s : c.sets) {
      if (c.probe.enabled) out.push_back({m.name, s.name, "probe", 0, 0});
      for (int64_t k : c.few_shot.shots)
        for (int64_t i = 0; i < c.few_shot.seeds; ++i)
          out.push_back(
              {m.name, s.name, "few-shot", k, c.few_shot.seed + static_cast<uint64_t>(i)});
      if (c.zeroshot && !s.prompts.empty() && m.kind() == "weights" &&
          bench_weights_have_text(m.weights))
        out.push_back({m.name, s.name, "zero-shot", 0, 0});
      if (c.finetune.enabled)
        for (uint64_t seed : c.finetune.seeds) out.push_back({m.name, s.name, "finetune", 0, seed});
    }
  return out;
}

json cell_key(const BenchConfig& c, const BenchCell& cell) {
  const BenchModel& m = *c.model(cell.model);
  const BenchSet& s = *c.set(cell.set);
  json model = model_json(m);
  if (m.kind() == "random") model["like"] = model_json(*c.model(m.random_like));
  json set = {{"data", s.data},
              {"files", bench_fingerprint(s.data)},
              {"level", config::name(s.level)},
              {"classes", bench_classes(s)},
              {"val_fraction", s.val_fraction},
              {"test_fraction", s.test_fraction},
              {"split_seed", s.split_seed},
              {"on_bad_sample", config::name(c.on_bad_sample)}};
  json proto = {{"name", cell.protocol}, {"seed", cell.seed}, {"bootstrap", c.bootstrap}};
  if (cell.protocol == "probe" || cell.protocol == "few-shot") {
    set["ignore_split"] = s.ignore_split;
    proto["c_grid"] = c.probe.c_grid;
    proto["balanced"] = c.probe.balanced;
    proto["select"] = c.probe.select;
    proto["feature"] = config::name(c.feature);
    proto["shots"] = cell.shots;
  } else if (cell.protocol == "zero-shot") {
    set["prompts"] = s.prompts;
    set["prompts_file"] = bench_fingerprint(s.prompts);
  } else {
    proto["epochs"] = c.finetune.epochs;
    proto["batch_size"] = c.finetune.batch_size;
    proto["set"] = c.finetune.set;
  }
  return {{"model", model}, {"set", set}, {"protocol", proto}};
}

// ---- fine-tuning cells' config ------------------------------------------------------------

config::Config finetune_cell_config(const BenchConfig& c, const BenchModel& m, const BenchSet& s,
                                    const config::Config& enc, uint64_t seed,
                                    const fs::path& run_dir) {
  std::vector<std::string> o = {fmt::format("finetune.epochs={}", c.finetune.epochs),
                                fmt::format("finetune.batch_size={}", c.finetune.batch_size)};
  o.insert(o.end(), c.finetune.set.begin(), c.finetune.set.end());
  config::Config cfg = config::load_string("{}", c.source + " protocols.finetune", o);
  auto& f = cfg.finetune;
  f.level = s.level;
  cfg.data.on_bad_sample = c.on_bad_sample;
  f.data = s.data;
  f.classes = bench_classes(s);
  f.val_fraction = s.val_fraction;
  f.test_fraction = s.test_fraction;
  f.split_seed = s.split_seed;
  f.init = m.kind() == "weights" ? m.weights : "";
  // The tower's shape: an export or checkpoint brings its own (finetune.init); a vision
  // model's is model.init.vision's; a random one takes its model's shape, no weights.
  cfg.model = enc.model;
  if (m.kind() != "vision") cfg.model.init = {};
  // Images are read as the model was trained to see them.
  cfg.data.image_size = enc.data.image_size;
  cfg.data.mean = enc.data.mean;
  cfg.data.std = enc.data.std;
  cfg.data.preprocess = enc.data.preprocess;
  cfg.data.max_image_pixels = enc.data.max_image_pixels;
  cfg.data.workers = c.workers;
  cfg.train.seed = seed;
  cfg.train.device = c.device;
  cfg.train.threads = c.threads;
  cfg.log.dir = run_dir.string();
  config::validate(cfg);
  return cfg;
}

// ---- the encoders and sets, each read once ------------------------------------------------

namespace {

/// A model as an Encoder: an export or checkpoint as `retclip probe --weights`, a vision
/// tower through model.init.vision's loader, a random one as --random-baseline makes it.
Encoder bench_encoder(const BenchConfig& c, const BenchModel& m,
                      std::map<std::string, Encoder>& cache) {
  auto it = cache.find(m.name);
  if (it != cache.end()) return it->second;
  Encoder e;
  if (m.kind() == "weights") {
    e = load_encoder(m.weights);
  } else if (m.kind() == "vision") {
    config::Config cfg;
    cfg.model.vision.preset = m.preset;
    cfg.model.vision.image_size = m.image_size;
    cfg.model.text.preset = "bert-micro";  // no text tower is used; keep the stand-in small
    cfg.model.init.vision = m.vision;
    io::resolve_pretrained_presets(cfg.model);
    model::RetClipOptions ro = model::retclip_options(cfg.model, 8);
    cfg.data.image_size = ro.vision().image_size();
    if (!m.mean.empty()) std::copy(m.mean.begin(), m.mean.end(), cfg.data.mean.begin());
    if (!m.std.empty()) std::copy(m.std.begin(), m.std.end(), cfg.data.std.begin());
    e.cfg = cfg;
    e.source = m.vision;
    e.net = model::RetClip(ro);
    io::load_pretrained(*e.net, m.vision, io::Pretrained::kVision,
                        fmt::format("models ({}).vision", m.name), ro.vision().grid());
    e.net->eval();
  } else {
    const Encoder like = bench_encoder(c, *c.model(m.random_like), cache);
    e = random_encoder(like, m.seed);
  }
  cache[m.name] = e;
  return e;
}

data::LabelOptions bench_label_options(const BenchConfig& c, const BenchSet& s) {
  data::LabelOptions lo;
  lo.path = s.data;
  lo.level = s.level;
  lo.classes = bench_classes(s);
  lo.policy = c.on_bad_sample;
  lo.val_fraction = s.val_fraction;
  lo.test_fraction = s.test_fraction;
  lo.seed = s.split_seed;
  lo.ignore_split = s.ignore_split;
  return lo;
}

FeatureOptions bench_feature_options(const BenchConfig& c, config::Level level) {
  FeatureOptions fo;
  fo.level = level;
  fo.feature = c.feature;
  fo.batch_size = c.batch;
  fo.workers = c.workers;
  fo.device = c.device;
  fo.policy = c.on_bad_sample;
  return fo;
}

json num_json(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

/// The table's metrics from a split's scalars (kappa: single-label only).
json bench_metrics(const std::map<std::string, double>& s, bool multi) {
  auto get = [&](const char* k) {
    auto it = s.find(k);
    return it == s.end() ? std::nan("") : it->second;
  };
  json j = {{"auroc", num_json(get("auroc_macro"))},
            {"aupr", num_json(get("aupr_macro"))},
            {"f1", num_json(get("f1_macro"))}};
  j["kappa"] = multi ? json(nullptr) : num_json(get("kappa"));
  return j;
}

json bench_ci(const std::map<std::string, Interval>& ci) {
  json j = json::object();
  for (const auto& [name, key] :
       std::vector<std::pair<std::string, std::string>>{{"auroc", "auroc_macro"},
                                                        {"aupr", "aupr_macro"},
                                                        {"f1", "f1_macro"},
                                                        {"kappa", "kappa"}}) {
    auto it = ci.find(key);
    if (it != ci.end() && it->second.rounds > 0)
      j[name] = {num_json(it->second.lo), num_json(it->second.hi)};
  }
  return j;
}

/// The ROC curve the plots draw: of the positive class for two classes (or one label),
/// else micro-averaged one-vs-rest (every row x class pair). scores [N, C]; truth [N, C] 0/1.
json bench_roc(const at::Tensor& scores, const at::Tensor& truth,
               const std::vector<std::string>& classes, bool multi) {
  const at::Tensor s = scores.to(torch::kDouble).contiguous().cpu();
  const at::Tensor t = truth.to(torch::kDouble).contiguous().cpu();
  const int64_t n = s.size(0), k = s.size(1);
  std::vector<double> score;
  std::vector<uint8_t> pos;
  std::string kind;
  const bool binary = (!multi && k == 2) || k == 1;
  const int64_t only = k == 1 ? 0 : 1;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      if (binary && j != only) continue;
      score.push_back(s[i][j].item<double>());
      pos.push_back(t[i][j].item<double>() > 0.5);
    }
  kind = binary ? fmt::format("ROC of class '{}'", classes[static_cast<size_t>(only)])
                : fmt::format("micro-average over {} {} (one-vs-rest)", k,
                              multi ? "labels" : "classes");
  const RocCurve r = roc_curve(score, pos);
  return {{"curve", kind}, {"fpr", r.fpr}, {"tpr", r.tpr}};
}

/// [N, C] 0/1 targets of items `rows` of `set`.
at::Tensor bench_truth(const data::LabelledSet& set, const std::vector<int64_t>& rows) {
  std::vector<at::Tensor> t;
  for (int64_t i : rows)
    t.push_back(torch::tensor(set.items[static_cast<size_t>(i)].target, torch::kFloat));
  return torch::stack(t);
}

}  // namespace

// ---- one cell per protocol ------------------------------------------------------------------

namespace {

/// What the cells of one run share: encoders, sets and features, each made once.
struct BenchState {
  const BenchConfig& cfg;
  fs::path out;
  const FinetuneRunner& finetune;
  std::map<std::string, Encoder> encoders;
  std::map<std::string, data::LabelledSet> probe_sets, zeroshot_sets;
  std::map<std::string, Features> features;  ///< "<model>/<set>"
  bool stopped = false;  ///< a fine-tuning run was stopped (signal): no further cells
};

/// Reads a set; an error says which entry of the benchmark's file it came from and what
/// the flags its hint names are called there.
data::LabelledSet read_bench_set(const BenchConfig& c, const BenchSet& s,
                                 const data::LabelOptions& lo, bool splits) {
  try {
    data::LabelledSet set = data::read_labelled(lo);
    if (splits) data::require_splits(set, lo, {"train", "val", "test"}, "the probe");
    return set;
  } catch (const UsageError& e) {
    size_t i = 0;
    while (i < c.sets.size() && c.sets[i].name != s.name) ++i;
    throw UsageError(str_cat(
        "sets[", i, "] (", s.name, ") of ", c.source, ": ", e.what(),
        " (in this file the flags are keys: --level is sets[", i,
        "].level, --classes .classes, "
        "--val-fraction .val_fraction, --test-fraction .test_fraction, --split-seed "
        ".split_seed, --ignore-split .ignore_split, --on-bad-sample options.on_bad_sample)"));
  }
}

const data::LabelledSet& probe_set(BenchState& st, const BenchSet& s) {
  auto it = st.probe_sets.find(s.name);
  if (it != st.probe_sets.end()) return it->second;
  return st.probe_sets[s.name] =
             read_bench_set(st.cfg, s, bench_label_options(st.cfg, s), /*splits=*/true);
}

/// The probe and K-shot cells: `retclip probe`'s probe_features on the features of the
/// (model, set), extracted once.
void run_probe_cell(BenchState& st, const BenchCell& cell, json& rec) {
  const BenchModel& m = *st.cfg.model(cell.model);
  const BenchSet& s = *st.cfg.set(cell.set);
  const data::LabelledSet& set = probe_set(st, s);
  const std::string fkey = cell.model + "/" + cell.set;
  if (!st.features.count(fkey)) {
    Encoder enc = bench_encoder(st.cfg, m, st.encoders);
    Features f = extract_features(enc, set.items, bench_feature_options(st.cfg, set.level));
    log::info("features of {} on {}: {} x {} in {:.1f} s (reused by every probe cell)", m.name,
              s.name, f.x.size(0), f.x.size(1), f.seconds);
    st.features[fkey] = std::move(f);
  }
  const Features& f = st.features.at(fkey);
  ProbeOptions po;
  po.c_grid = st.cfg.probe.c_grid;
  po.balanced = st.cfg.probe.balanced;
  po.select = st.cfg.probe.select;
  po.shots = cell.shots;
  po.seeds = 1;
  po.seed = cell.seed;
  po.bootstrap.rounds = st.cfg.bootstrap;
  const LabelledProbe p = probe_features(set, f, po);
  const ProbeRun& run = p.result.runs.at(0);
  const json detail = json::parse(p.json);
  std::vector<int64_t> test_rows;
  std::set<std::string> have(f.ids.begin(), f.ids.end());
  for (int64_t i : set.indices("test"))
    if (have.count(set.items[static_cast<size_t>(i)].id)) test_rows.push_back(i);
  rec["task"] = set.multi_label ? "multi-label" : "single-label";
  rec["level"] = config::name(set.level);
  rec["classes"] = set.classes;
  rec["n_test"] = run.test_scores.size(0);
  rec["metrics"] = bench_metrics(run.test, set.multi_label);
  rec["ci95"] = bench_ci(p.result.test_ci);
  rec["splits"] = detail.at("splits");
  rec["train_rows"] = run.train_rows;
  rec["chosen_c"] = run.chosen_c;
  rec["roc"] =
      bench_roc(run.test_scores, bench_truth(set, test_rows), set.classes, set.multi_label);
  rec["detail"] = detail;
  util::write_file_atomic(st.out / cell.dir() / "predictions.csv", p.predictions_csv);
}

/// The zero-shot cell: `retclip zeroshot` (the set read as it reads it: the prompt
/// file's classes, splits as given, its test split or every row).
void run_zeroshot_cell(BenchState& st, const BenchCell& cell, json& rec) {
  const BenchModel& m = *st.cfg.model(cell.model);
  const BenchSet& s = *st.cfg.set(cell.set);
  const PromptSet prompts = load_prompts(s.prompts);
  if (!st.zeroshot_sets.count(s.name)) {
    data::LabelOptions lo;
    lo.path = s.data;
    lo.level = s.level;
    lo.classes = prompts.classes;
    lo.policy = st.cfg.on_bad_sample;
    lo.draw_splits = false;
    st.zeroshot_sets[s.name] = read_bench_set(st.cfg, s, lo, /*splits=*/false);
  }
  const data::LabelledSet& set = st.zeroshot_sets.at(s.name);
  Encoder enc = bench_encoder(st.cfg, m, st.encoders);
  ZeroShotOptions zo;
  zo.features = bench_feature_options(st.cfg, set.level);
  zo.bootstrap.rounds = st.cfg.bootstrap;
  const ZeroShotResult r = run_zeroshot(enc, set, prompts, zo);
  std::vector<int64_t> rows = set.indices("test");
  if (rows.empty())
    for (size_t i = 0; i < set.items.size(); ++i) rows.push_back(static_cast<int64_t>(i));
  const json detail = json::parse(r.json);
  rec["task"] = set.multi_label ? "multi-label" : "single-label";
  rec["level"] = config::name(set.level);
  rec["classes"] = set.classes;
  rec["n_test"] = r.scores.size(0);
  rec["metrics"] =
      bench_metrics(set.multi_label ? r.multi.scalars() : r.single.scalars(), set.multi_label);
  rec["ci95"] = bench_ci(r.ci);
  rec["splits"] = {{detail.value("split", "test"),
                    {{"n", r.scores.size(0)}, {"ids_hash", detail.value("split_ids_hash", "")}}}};
  if (static_cast<int64_t>(rows.size()) == r.scores.size(0))
    rec["roc"] = bench_roc(r.scores, bench_truth(set, rows), set.classes, set.multi_label);
  rec["detail"] = detail;
}

/// The fine-tuning cell: `retclip finetune` with the cell's config (finetune.yaml in the
/// cell, so that the command reruns it), then CIs and the ROC from its test predictions.
void run_finetune_cell(BenchState& st, const BenchCell& cell, json& rec) {
  const BenchModel& m = *st.cfg.model(cell.model);
  const BenchSet& s = *st.cfg.set(cell.set);
  const BenchModel& shape = m.kind() == "random" ? *st.cfg.model(m.random_like) : m;
  const config::Config enc_cfg = bench_encoder(st.cfg, shape, st.encoders).cfg;
  const fs::path dir = st.out / cell.dir();
  const config::Config cfg = finetune_cell_config(st.cfg, m, s, enc_cfg, cell.seed, dir / "run");
  util::write_file_atomic(dir / "finetune.yaml", config::to_yaml(cfg));
  const json res = st.finetune(cfg);
  if (res.is_null()) {
    st.stopped = true;
    throw Error(
        str_cat("fine-tuning stopped before its last step (a stop signal); run the "
                "benchmark again to run this cell"));
  }
  RETCLIP_CHECK_USAGE(res.contains("test") && res.at("test").is_object(), s.data,
                      " has no test split, so fine-tuning scored nothing after selection. HINT: "
                      "sets[].test_fraction (e.g. 0.3) draws one");
  const bool multi = res.value("task", "") == "multi-label";
  const auto classes = res.at("classes").get<std::vector<std::string>>();
  std::map<std::string, double> scalars;
  for (const auto& [k, v] : res.at("test").items())
    if (v.is_number()) scalars[k] = v.get<double>();
  // The test predictions the run wrote: p_<class> and true_<class> columns.
  const auto rows = data::parse_csv(util::read_file(dir / "run" / "test_predictions.csv"));
  RETCLIP_CHECK(rows.size() > 1, "fine-tuning wrote no test predictions in ",
                (dir / "run").string());
  const auto& head = rows[0].fields;
  std::vector<size_t> pcol, tcol;
  for (const auto& c : classes)
    for (size_t k = 0; k < head.size(); ++k) {
      if (head[k] == "p_" + c) pcol.push_back(k);
      if (head[k] == "true_" + c) tcol.push_back(k);
    }
  RETCLIP_CHECK(pcol.size() == classes.size() && tcol.size() == classes.size(),
                "unexpected columns in the fine-tuning test predictions");
  const int64_t n = static_cast<int64_t>(rows.size()) - 1, k = static_cast<int64_t>(classes.size());
  at::Tensor probs = torch::zeros({n, k}), truth = torch::zeros({n, k});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      probs[i][j] =
          std::stod(rows[static_cast<size_t>(i + 1)].fields[pcol[static_cast<size_t>(j)]]);
      truth[i][j] =
          std::stod(rows[static_cast<size_t>(i + 1)].fields[tcol[static_cast<size_t>(j)]]);
    }
  BootstrapOptions bo;
  bo.rounds = st.cfg.bootstrap;
  std::map<std::string, Interval> ci;
  if (bo.rounds > 0)
    ci = multi ? multi_label_bootstrap(probs, truth,
                                       res.at("thresholds").get<std::vector<double>>(), bo)
               : single_label_bootstrap(probs, truth.argmax(1), bo);
  const json& sp = res.at("splits");
  json splits = {{"val_drawn", sp.value("val_drawn", false)},
                 {"test_drawn", sp.value("test_drawn", false)},
                 {"seed", sp.value("split_seed", uint64_t{0})}};
  for (const char* name : {"train", "val", "test"})
    splits[name] = {{"n", sp.at(name).value("n", int64_t{0})},
                    {"ids_hash", sp.at(name).value("hash", "")}};
  rec["task"] = multi ? "multi-label" : "single-label";
  rec["level"] = res.value("level", "");
  rec["classes"] = classes;
  rec["n_test"] = n;
  rec["metrics"] = bench_metrics(scalars, multi);
  rec["ci95"] = bench_ci(ci);
  rec["splits"] = splits;
  rec["chosen_epoch"] = res.at("selection").value("chosen_epoch", int64_t{0});
  rec["roc"] = bench_roc(probs, truth, classes, multi);
  json detail = res;
  detail.erase("export");
  rec["detail"] = detail;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The keys whose values differ between two cell keys ("protocol/c_grid").
std::vector<std::string> key_changes(const json& before, const json& after) {
  const json a = before.flatten(), b = after.flatten();
  std::set<std::string> keys;
  for (const auto& [k, v] : a.items())
    if (!b.contains(k) || b.at(k) != v) keys.insert(k.substr(1));
  for (const auto& [k, v] : b.items())
    if (!a.contains(k)) keys.insert(k.substr(1));
  // A list's entries flatten to ".../0", ".../1": name the list once.
  std::set<std::string> named;
  for (std::string k : keys) {
    const auto slash = k.find_last_of('/');
    if (slash != std::string::npos &&
        k.find_first_not_of("0123456789", slash + 1) == std::string::npos)
      k = k.substr(0, slash);
    named.insert(k);
  }
  return {named.begin(), named.end()};
}

}  // namespace

// ---- the run ---------------------------------------------------------------------------------

BenchSummary run_benchmark(const BenchConfig& c, const fs::path& out, const FinetuneRunner& ft) {
  const auto t0 = std::chrono::steady_clock::now();
  fs::create_directories(out);
  const log::Options log_opts{(out / "benchmark.log").string()};
  log::init(log_opts);
  // Fine-tuning sets the intra-op threads of its run (train.threads); the probe and
  // zero-shot cells run with what this process started with, as the single commands do.
  const int threads = at::get_num_threads();
  const std::vector<BenchCell> cells = bench_cells(c);
  RETCLIP_CHECK_USAGE(!cells.empty(), c.source,
                      " gives no cell: zero-shot is its only protocol and no model has a text "
                      "tower (a retclip export with full weights or a checkpoint). HINT: add "
                      "protocols.probe, or a model with a text tower");
  BenchSummary sum;
  sum.cells = static_cast<int64_t>(cells.size());

  // The plan: a cell whose cell.json is done with the same key is skipped.
  std::vector<size_t> to_run;
  std::vector<json> keys(cells.size());
  int64_t fresh = 0, retried = 0;
  for (size_t i = 0; i < cells.size(); ++i) {
    keys[i] = cell_key(c, cells[i]);
    const fs::path file = out / cells[i].dir() / "cell.json";
    json old;
    if (fs::exists(file)) {
      try {
        old = json::parse(util::read_file(file));
      } catch (const std::exception&) {
        old = json();
      }
    }
    if (old.is_object() && old.value("status", "") == "done" && old.contains("key") &&
        old.at("key") == keys[i]) {
      ++sum.skipped;
      continue;
    }
    to_run.push_back(i);
    if (old.is_object() && old.value("status", "") == "done" && old.contains("key")) {
      const auto changed = key_changes(old.at("key"), keys[i]);
      sum.changed.push_back(cells[i].label());
      log::info("cell {}: its config changed ({}), so it runs again", cells[i].label(),
                fmt::join(changed, ", "));
    } else if (old.is_object() && old.value("status", "") == "failed") {
      ++retried;
    } else {
      ++fresh;
    }
  }
  log::info(
      "benchmark {}: {} models x {} sets, {} cells: {} to run ({} new, {} changed, {} failed "
      "before), {} done earlier -> {}",
      c.source, c.models.size(), c.sets.size(), cells.size(), to_run.size(), fresh,
      sum.changed.size(), retried, sum.skipped, out.string());

  BenchState st{c, out, ft, {}, {}, {}, {}};
  std::map<std::string, std::pair<double, int64_t>> per_protocol;  // seconds, cells
  double spent = 0;
  for (size_t n = 0; n < to_run.size(); ++n) {
    const BenchCell& cell = cells[to_run[n]];
    // Features and encoders of a model are dropped once its cells are done.
    if (n > 0 && cells[to_run[n - 1]].model != cell.model) {
      st.features.clear();
      st.encoders.clear();
    }
    const fs::path dir = out / cell.dir();
    fs::create_directories(dir);
    json rec = {{"model", cell.model},        {"set", cell.set},   {"protocol", cell.protocol},
                {"shots", cell.shots},        {"seed", cell.seed}, {"key", keys[to_run[n]]},
                {"retclip_version", kVersion}};
    const auto c0 = std::chrono::steady_clock::now();
    try {
      if (cell.protocol == "probe" || cell.protocol == "few-shot")
        run_probe_cell(st, cell, rec);
      else if (cell.protocol == "zero-shot")
        run_zeroshot_cell(st, cell, rec);
      else
        run_finetune_cell(st, cell, rec);
      rec["status"] = "done";
    } catch (const std::exception& e) {
      rec["status"] = "failed";
      rec["error"] = e.what();
      ++sum.failed;
    }
    if (cell.protocol == "finetune") {
      at::set_num_threads(threads);
      log::init(log_opts);  // the run logged into its own directory
    }
    const double sec = seconds_since(c0);
    rec["seconds"] = sec;
    util::write_file_atomic(dir / "cell.json", rec.dump(2));
    ++sum.ran;
    spent += sec;
    auto& pp = per_protocol[cell.protocol];
    pp.first += sec, pp.second += 1;
    // ETA: the remaining cells at their protocol's mean time so far (else the overall mean).
    double eta = 0;
    for (size_t r = n + 1; r < to_run.size(); ++r) {
      auto it = per_protocol.find(cells[to_run[r]].protocol);
      eta += it != per_protocol.end() ? it->second.first / static_cast<double>(it->second.second)
                                      : spent / static_cast<double>(n + 1);
    }
    const std::string what =
        rec["status"] == "done"
            ? fmt::format("test macro AUROC {}",
                          rec["metrics"]["auroc"].is_number()
                              ? fmt::format("{:.4f}", rec["metrics"]["auroc"].get<double>())
                              : std::string("undefined"))
            : "FAILED: " + rec["error"].get<std::string>();
    log::write(rec["status"] == "done" ? log::Level::kInfo : log::Level::kWarn,
               fmt::format("[{}/{}] {}: {} ({:.1f} s) | ETA {}", n + 1, to_run.size(), cell.label(),
                           what, sec, util::format_duration(eta)));
    if (st.stopped) {
      log::warn("benchmark stopped after {} of {} cells; the rest run on the next run", n + 1,
                to_run.size());
      break;
    }
  }

  // The report, from every cell's file.
  std::vector<json> all;
  for (const auto& cell : cells) {
    const fs::path file = out / cell.dir() / "cell.json";
    json j = fs::exists(file)
                 ? json::parse(util::read_file(file))
                 : json{{"model", cell.model}, {"set", cell.set},   {"protocol", cell.protocol},
                        {"shots", cell.shots}, {"seed", cell.seed}, {"status", "not run"}};
    j.erase("key");
    all.push_back(std::move(j));
  }
  std::vector<std::string> models, sets;
  for (const auto& m : c.models) models.push_back(m.name);
  for (const auto& s : c.sets) sets.push_back(s.name);
  json meta = {{"config", c.source},  {"retclip_version", kVersion}, {"models", models},
               {"sets", sets},        {"cells", cells.size()},       {"bootstrap", c.bootstrap},
               {"feature", config::name(c.feature)}};
  int64_t failed_total = 0;
  for (const auto& j : all) failed_total += j.value("status", "") != "done";
  const auto plots = write_report(all, models, sets, meta, out);
  sum.seconds = seconds_since(t0);
  log::info(
      "benchmark: {} cells ({} run now, {} done earlier, {} failed) in {:.1f} s; {} plots; "
      "{}",
      cells.size(), sum.ran, sum.skipped, failed_total, sum.seconds, plots.size(),
      (out / "report.html").string());
  sum.failed = failed_total;
  return sum;
}

}  // namespace retclip::eval
