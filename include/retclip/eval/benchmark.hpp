// `retclip benchmark`: several encoders judged on several labelled sets under the probe,
// K-shot, zero-shot and fine-tuning protocols in one run, with a table and plots
// (eval/report.hpp). Every cell (model x set x protocol x K x seed) calls the code path
// of the single command (`retclip probe`, `zeroshot`, `finetune`), so its numbers are the
// command's; cells are written when done and skipped on a rerun with the same config.
//
//   eval::BenchConfig c = eval::load_bench_config("configs/bench-smoke.yaml");  // validated
//   eval::BenchSummary s = eval::run_benchmark(c, "runs/bench");
//   s.ran, s.skipped, s.failed   (runs/bench/results.{csv,json,md}, plots/, report.html)
//
// Layout of the output directory:
//   cells/<model>/<set>/<protocol>[-k<K>]-seed<S>/cell.json   one cell (atomic, when done)
//       .../predictions.csv (probe, fine-tune), finetune.yaml + run/ (fine-tune)
//   results.csv, results.json, results.md, plots/*.png, report.html, benchmark.log
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"

namespace retclip::eval {

/// One encoder of the table. Exactly one of weights, vision and random_like is set.
struct BenchModel {
  std::string name;
  std::string weights;  ///< retclip export, checkpoint or run directory (as --weights)
  std::string vision;   ///< image-tower weights as model.init.vision takes them (CLIP, timm)
  std::string preset = "checkpoint";  ///< model.vision.preset for `vision` (sizes from the file)
  int64_t image_size = 0;             ///< data.image_size for `vision` (0: the preset's)
  /// data.mean / data.std for `vision` (empty: CLIP's; RETFound and timm ImageNet towers
  /// take ImageNet's 0.485, 0.456, 0.406 / 0.229, 0.224, 0.225).
  std::vector<double> mean, std;
  std::string random_like;   ///< a random initialisation of this model's shape (the floor)
  uint64_t seed = 0;         ///< seed of the random initialisation
  std::string kind() const;  ///< "weights" | "vision" | "random"
};

/// One labelled set, read as `retclip probe --data` reads it.
struct BenchSet {
  std::string name;
  std::string data;                  ///< manifest or <root>/{train,val,test}/<class>/ folder
  config::Level level = config::Level::kAuto;  ///< auto | eye | patient
  std::vector<std::string> classes;  ///< class order (empty: the prompt file's, else sorted)
  std::string prompts;               ///< prompt file: the set takes part in zero-shot
  double val_fraction = 0.2, test_fraction = 0.0;
  uint64_t split_seed = 0;
  bool ignore_split = false;  ///< probe protocols only (fine-tuning keeps the split column)
};

struct BenchProbe {
  bool enabled = false;
  std::vector<double> c_grid = {1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1000, 10000};
  bool balanced = false;
  std::string select = "auroc_macro";
};

struct BenchFewShot {
  std::vector<int64_t> shots;  ///< K values; empty: no K-shot cells
  int64_t seeds = 5;           ///< draws per K: seeds seed .. seed + seeds - 1
  uint64_t seed = 0;
};

struct BenchFinetune {
  bool enabled = false;
  std::vector<uint64_t> seeds = {0};  ///< train.seed of each run
  int64_t epochs = 50;                ///< RETFound's recipe (finetune.* defaults)
  int64_t batch_size = 16;
  std::vector<std::string> set;  ///< further `finetune.*` / `data.*` / `train.*` overrides
};

struct BenchConfig {
  std::string source;  ///< the YAML file
  std::vector<BenchModel> models;
  std::vector<BenchSet> sets;
  BenchProbe probe;
  BenchFewShot few_shot;
  bool zeroshot = false;
  BenchFinetune finetune;
  config::Feature feature = config::Feature::kPostProj;  ///< probe features: pre_proj | post_proj
  int64_t bootstrap = 1000;           ///< rounds of the 95% CIs (0: none)
  std::string device = "auto";
  int64_t batch = 64, workers = 2;
  int64_t threads = 0;  ///< fine-tuning's train.threads (0: the cores available)
  config::BadSamplePolicy on_bad_sample = config::BadSamplePolicy::kFail;
  const BenchModel* model(const std::string& name) const;
  const BenchSet* set(const std::string& name) const;
};

/// Reads and validates the whole file before anything runs: unknown keys, missing or
/// duplicate names, paths that do not exist, a random model without a shape, prompt files
/// whose classes are not the set's, fine-tune overrides config::load refuses. Errors
/// name the key path ("sets[1].prompts") and end with a HINT.
BenchConfig load_bench_config(const std::string& path);
BenchConfig parse_bench_config(const std::string& yaml, const std::string& origin);

/// One cell of the table.
struct BenchCell {
  std::string model, set;
  std::string protocol;  ///< "probe" | "few-shot" | "zero-shot" | "finetune"
  int64_t shots = 0;     ///< K of a few-shot cell
  uint64_t seed = 0;
  /// cells/<model>/<set>/<protocol>[-k<K>]-seed<S>, relative to the output directory.
  std::string dir() const;
  std::string label() const;  ///< "retclip / synth-eye / 2-shot / seed 1"
};

/// Every cell the config asks for, in run order (model, set, then protocol): a model
/// with a text tower gets zero-shot cells on the sets with a prompt file; `random`
/// models have no text tower.
std::vector<BenchCell> bench_cells(const BenchConfig& config);

/// What identifies a cell's result: the model, the set (with a fingerprint of their
/// files: sizes and modification times), the protocol's options, K, seed and bootstrap.
/// A rerun recomputes a cell whose key differs from the one in its cell.json.
nlohmann::json cell_key(const BenchConfig& config, const BenchCell& cell);

struct BenchSummary {
  int64_t cells = 0, ran = 0, skipped = 0, failed = 0;
  double seconds = 0;
  std::vector<std::string> changed;  ///< cells rerun because their key changed
};

/// What a fine-tuning cell runs with its config: `retclip finetune`'s train::run_finetune
/// (log.dir started over), returning its results.json, or null when a stop signal ended
/// the run early (the benchmark then stops after recording the cell). `eval` sits below
/// `train` in the module order, so the caller passes it in (src/cli/benchmark.cpp).
using FinetuneRunner = std::function<nlohmann::json(const config::Config&)>;

/// The config of a fine-tuning cell, as `retclip finetune --config` would read it: the
/// recipe's defaults (RETFound's), protocols.finetune's epochs, batch_size and `set`,
/// the set's data keys, the model as finetune.init (weights), model.init.vision
/// (vision) or a random tower of the shape of `like_model` (random), the preprocessing
/// of `encoder_cfg` (the model's own), train.seed = seed and log.dir = run_dir.
config::Config finetune_cell_config(const BenchConfig& config, const BenchModel& model,
                                    const BenchSet& set, const config::Config& encoder_cfg,
                                    uint64_t seed, const std::filesystem::path& run_dir);

/// Runs the cells that have no up-to-date cell.json (a failed one is retried), then
/// writes the results and the report from every cell.json. A failing cell is recorded
/// with its error and the others go on.
BenchSummary run_benchmark(const BenchConfig& config, const std::filesystem::path& out,
                           const FinetuneRunner& finetune);

}  // namespace retclip::eval
