// `retclip bench`: times W untimed + N timed training steps of the configured model,
// batch, precision and device, split into phases (data wait, forward, backward,
// optimizer, communication), with peak memory and, on CUDA, the model FLOPs
// utilisation (MFU, see flops.hpp). The step is the training step (train_step, the one
// both tasks use): `--task pretrain` the ContrastiveTask of `retclip train` (forward,
// tripartite loss, backward, gradient norm / clip, AdamW, logit-scale clamp) on the
// training schedule; `--task finetune` the ClassifierTask of `retclip finetune` (the
// finetune.* classifier, layer-decay AdamW, accumulation) at its peak lr.
//
//   train::BenchOptions o;  o.steps = 20;  o.warmup = 3;  o.data = "synthetic";
//   train::BenchResult r = train::run_bench(config::load("configs/tiny-cpu.yaml"), o);
//   std::cout << r.to_json().dump() << "\n" << r.table();
//
// Bench mode synchronises the device at every phase boundary (torch::cuda::synchronize)
// so that each phase's time is its own; the trainer does not.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "retclip/config/config.hpp"

namespace retclip::train {

struct BenchOptions {
  int64_t steps = 10;              ///< timed steps
  int64_t warmup = 2;              ///< untimed steps first (allocator, autotuning, threads)
  std::string data = "synthetic";  ///< synthetic: random tensors made once on the device;
                                   ///< loader: the config's data.train through TrainData
  std::string task = "pretrain";   ///< pretrain | finetune (synthetic data only)
  double peak_tflops = 0;          ///< peak dense bf16 TFLOP/s of the device; 0 = by device name
  /// Extra communication source: called after every step, returns seconds spent in
  /// collectives outside retclip's process group (added to comm_ms). Under `retclip
  /// launch` / torchrun the bench runs data-parallel itself and measures its own
  /// collectives (feature all-gather, gradient all-reduce); those seconds are also inside
  /// the forward / backward phases they overlap.
  std::function<double()> comm_seconds;
  /// When set: a Chrome / Perfetto trace of the timed steps (LibTorch's Kineto profiler:
  /// CPU operators, and CUDA kernels on a GPU) is written to this path. Slows the steps.
  std::string profile_path;
  /// --data loader: the folder that receives bad_samples.tsv (the samples the loader
  /// skipped or failed on). Empty: a scratch folder removed when the bench ends, so a
  /// bench leaves no run directory behind (log.dir is not written).
  std::string bad_samples_dir;
};

/// Means over the timed steps, in milliseconds, plus what was run.
struct BenchResult {
  // what ran
  std::string device;       ///< "cpu" | "cuda:0"
  std::string device_name;  ///< CPU model or CUDA device name
  std::string precision, data, vision, text;
  std::string task = "pretrain";
  std::string unit = "patients";  ///< what a row is: patients, or images (eye-level finetune)
  int64_t threads = 0, batch = 0, steps = 0, warmup = 0, tokens = 0, image_size = 0,
          accum_steps = 1, world = 1, rank = 0;
  int64_t params = 0;
  bool grad_checkpointing = false;
  // time per step (means, ms)
  double step_ms = 0, data_ms = 0, forward_ms = 0, backward_ms = 0, optimizer_ms = 0, comm_ms = 0;
  bool split_forward_backward = true;  ///< false with accum_steps > 1 (forward_ms = both)
  double patients_per_s = 0;  ///< rows (`unit`) per second, all ranks (batch x world per step)
  // memory
  double peak_memory_gib = 0;    ///< CUDA: peak allocated (caching allocator); CPU: peak RSS
  double peak_reserved_gib = 0;  ///< CUDA only: peak reserved by the caching allocator
  std::string memory_kind;       ///< "cuda_allocated" | "rss"
  // FLOPs
  double gflop_per_patient = 0;  ///< training step (3x forward) per row, analytic
  double tflops_achieved = 0;    ///< model TFLOP/s over the mean step
  double peak_tflops = 0;        ///< 0 = unknown
  double mfu = -1;               ///< tflops_achieved / peak_tflops; -1 = not computed
  double final_loss = 0;         ///< loss of the last timed step (sanity)
  std::vector<double> losses;    ///< loss of every step, warm-up included (same as training's)
  /// The resolved model sizes, loss and optimizer settings, so that another
  /// implementation (bench/bench_train.py --like) can build the same step.
  nlohmann::json setup;

  nlohmann::json to_json() const;
  /// Readable table of the same figures (with units).
  std::string table() const;
};

/// Runs the benchmark. Throws UsageError for a bad config / options (e.g. bf16 on CPU,
/// loader mode without data.train).
BenchResult run_bench(const config::Config& cfg, const BenchOptions& options);

}  // namespace retclip::train
