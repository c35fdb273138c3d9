// Pretraining: `retclip train`. Builds data, model and optimizer, then runs the one loop
// (train/loop.hpp) with a ContrastiveTask (forward/backward with full-batch negatives)
// and the pretraining recipe (optim.* schedule, train/* metrics, validation, the probe,
// checkpoint cadence); the final validation follows the loop.
//
//   config::Config cfg = config::load("configs/tiny-cpu.yaml", {"train.steps=100"});
//   train::TrainSummary s = train::run_training(cfg, {});
//
// Exactness: the schedule is a function of the global step, the data order a function
// of (seed, epoch, position), augmentation a function of (seed, epoch, index, eye), and
// RNG states, optimizer moments and the sampler cursor are in every checkpoint, so a
// resumed run repeats an uninterrupted one bit for bit on CPU.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/train/loop.hpp"
#include "retclip/train/validate.hpp"

namespace retclip::train {

struct TrainSummary {
  int64_t start_step = 0;  ///< step the run started from (0, or the checkpoint's)
  int64_t end_step = 0;    ///< optimizer steps done in total
  int64_t skipped_steps = 0;
  bool interrupted = false;              ///< stopped by a signal or --max-minutes
  std::string checkpoint;                ///< last checkpoint written
  std::optional<EvalResult> final_eval;  ///< rank 0 only
  int rank = 0;                          ///< this process's rank (0 when not distributed)
};

/// Runs (or resumes) pretraining as configured. Throws UsageError for bad inputs
/// detected before the first step and Error for failures during training.
TrainSummary run_training(const config::Config& cfg, const TrainOptions& options);

}  // namespace retclip::train
