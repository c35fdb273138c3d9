// Learning-rate schedules as pure functions of the global optimizer step, with
// OpenCLIP's formulas (open_clip/src/training/scheduler.py), so that a resumed run
// needs no scheduler state: the step alone gives the rate.
//
//   double lr = train::lr_at(cfg.optim, step, total_steps);
//   train::set_lr(optimizer, lr);
#pragma once

#include <cstdint>
#include <string>

#include "retclip/config/config.hpp"

namespace retclip::train {

/// Learning rate for the 0-based optimizer `step` of a run of `total_steps` steps.
///
/// - warmup (every schedule, when optim.warmup_steps > 0 and step < warmup):
///     lr * (step + 1) / warmup                                 (OpenCLIP `_warmup_lr`)
/// - `cosine`: with e = step - warmup, es = total_steps - warmup,
///     min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * e / es))    (OpenCLIP `cosine_lr`,
///     which is the case min_lr = 0); e is clamped to [0, es], so steps past the end
///     stay at min_lr instead of climbing back up the cosine; es <= 0 gives min_lr.
/// - `constant`: lr after warmup                                (OpenCLIP `const_lr`)
/// - `const-cooldown`: lr until step total - cooldown_steps, then linearly down to
///     min_lr: with e = step - start, es = total - start,
///     min_lr + (lr - min_lr) * (1 - e / es)                    (OpenCLIP
///     `const_lr_cooldown`, cooldown_power 1, cooldown_end_lr = min_lr); clamped at min_lr.
///
/// Throws UsageError for an unknown schedule name or a negative total.
double lr_at(const config::OptimConfig& cfg, int64_t step, int64_t total_steps);

/// The schedule names lr_at accepts, for help texts and validation messages.
const char* schedule_names();

}  // namespace retclip::train
