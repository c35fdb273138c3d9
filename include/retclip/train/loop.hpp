// The one training loop, for pretraining (`retclip train`) and fine-tuning (`retclip
// finetune`). Reads top to bottom as llm.c's: resume if asked ▸ weights broadcast and
// gradient sync (make_step_context) ▸ metric sinks ▸ loop (schedule, the recipe's batch,
// train_step, log, the recipe's evaluations, checkpoint cadence, stop requests and the
// time budget agreed over ranks) ▸ final checkpoint ▸ summary.
//
// A Recipe is what a kind of training brings besides its Task (train/task.hpp): its
// data, schedule, what it logs and evaluates, and what its checkpoint keeps besides the
// weights. Pretraining's recipe lives in trainer.cpp, fine-tuning's in finetune.cpp.
//
//   train::LoopSummary s = train::run_loop({cfg, run, recipe, task, *optimizer, step_options,
//                                           started}, options, new_dir);
//
// Exactness: the schedule is a function of the step, the data order and augmentation
// functions of (seed, epoch, position), and RNG states, optimizer moments and the data
// cursor are in every checkpoint, so a resumed run repeats an uninterrupted one bit for
// bit on CPU, whatever the task.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "retclip/config/config.hpp"
#include "retclip/train/step.hpp"

namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace retclip::train {

class MetricsSink;
struct Run;
class NewRunDir;

struct TrainOptions {
  double max_minutes = 0;  ///< stop cleanly (checkpoint + validation) after this; 0 = off
  /// Start over in a log.dir that already holds a run: its checkpoints, metrics.jsonl and
  /// TensorBoard events are removed first. Without it (and without checkpoint.resume) such
  /// a directory is refused, so that two runs never mix.
  bool overwrite = false;
};

/// Installs SIGINT/SIGTERM handlers: the first asks the loop to stop after the current
/// step (checkpoint, exit 0), the second exits at once (status 130).
void install_stop_handlers();
/// True once a stop was requested.
bool stop_requested();

/// What happened since the last progress line: rows trained (all ranks), seconds spent
/// waiting for data, in the step, in collectives, and in all.
struct StepWindow {
  int64_t rows = 0;
  double wait_s = 0, busy_s = 0, comm_s = 0, seconds = 0;
  int64_t skipped = 0;  ///< non-finite steps skipped in the run so far
};

class Recipe {
 public:
  virtual ~Recipe() = default;

  /// What is trained, for the start line ("training 100 steps (...)"; the loop adds
  /// "from step N").
  virtual std::string describe() const = 0;
  virtual int64_t steps_per_epoch() const = 0;
  virtual int64_t total_steps() const = 0;
  /// Learning rate of the step that follows `step` steps.
  virtual double lr(int64_t step) const = 0;
  /// The batch of the step that follows `step` steps, on the device, with everything the
  /// task reads (targets, mixing, laterality).
  virtual MicroBatch next_batch(int64_t step) = 0;

  /// What a checkpoint keeps besides weights, optimizer and RNG (the data cursor, the
  /// recipe's own records), and its restore on resume.
  virtual nlohmann::json state() const = 0;
  virtual void restore(const nlohmann::json& state) = 0;

  /// The metrics and progress line of `step` (every log.interval steps and the last).
  virtual void log(int64_t step, const StepResult& r, double lr, const StepWindow& window,
                   MetricsSink& sinks) = 0;
  /// After step `step` and its log: the recipe's evaluations (validation, probe).
  virtual void after_step(int64_t step, MetricsSink& sinks) = 0;
  /// Whether step `step` ends with a checkpoint (a stop and the last step always do).
  virtual bool checkpoint_due(int64_t step) const = 0;
  /// After the loop, before the sinks are flushed (a final validation).
  virtual void after_loop(int64_t step, bool interrupted, MetricsSink& sinks) = 0;
};

/// What the loop runs: the run (directory, device, process group), the recipe, its task
/// and optimizer, the step's settings, and when the command started (the time budget
/// counts from there).
struct LoopInput {
  const config::Config& cfg;
  Run& run;
  Recipe& recipe;
  std::shared_ptr<Task> task;
  torch::optim::Optimizer& optimizer;
  StepOptions step;
  model::Precision precision = model::Precision::kFp32;  ///< fp16 enables the loss scaler
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  /// Wait for the device after each step so that `busy_s` is the step's own time.
  bool sync_after_step = false;
};

struct LoopSummary {
  int64_t start_step = 0;  ///< step the run started from (0, or the checkpoint's)
  int64_t end_step = 0;    ///< optimizer steps done in total
  int64_t skipped_steps = 0;
  bool interrupted = false;  ///< stopped by a signal or the time budget
  std::string checkpoint;    ///< last checkpoint written (or resumed from)
};

/// Runs (or, with checkpoint.resume, resumes) the loop to recipe.total_steps(). Throws
/// Error when every step of the run was skipped as non-finite, or after
/// train.max_skipped_steps skipped steps in a row. `new_dir` is kept from the first step.
LoopSummary run_loop(LoopInput in, const TrainOptions& options, NewRunDir& new_dir);

}  // namespace retclip::train
