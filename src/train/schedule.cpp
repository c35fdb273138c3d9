// Warmup + cosine / constant / constant-with-cooldown learning rates (OpenCLIP formulas).
#include "retclip/train/schedule.hpp"

#include <algorithm>
#include <cmath>

#include "retclip/util/error.hpp"

namespace retclip::train {

const char* schedule_names() { return "cosine | constant | const-cooldown"; }

double lr_at(const config::OptimConfig& cfg, int64_t step, int64_t total_steps) {
  RETCLIP_CHECK_USAGE(total_steps >= 0, "expected total_steps >= 0 but got ", total_steps,
                      " (key train.steps). HINT: set train.steps or train.epochs");
  RETCLIP_CHECK(step >= 0, "expected a non-negative optimizer step but got ", step);
  const double base = cfg.lr;
  const int64_t warmup = std::max<int64_t>(cfg.warmup_steps, 0);
  const bool known = cfg.schedule == "cosine" || cfg.schedule == "constant" ||
                     cfg.schedule == "const-cooldown";
  RETCLIP_CHECK_USAGE(known, "expected optim.schedule to be one of ", schedule_names(),
                      " but got '", cfg.schedule, "'. HINT: cosine is the RET-CLIP default");

  if (step < warmup)
    return base * static_cast<double>(step + 1) / static_cast<double>(warmup);

  if (cfg.schedule == "constant") return base;

  if (cfg.schedule == "cosine") {
    const int64_t es = total_steps - warmup;
    if (es <= 0) return cfg.min_lr;
    const int64_t e = std::min(step - warmup, es);
    const double factor = 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(e) /
                                                static_cast<double>(es)));
    return cfg.min_lr + (base - cfg.min_lr) * factor;
  }

  // const-cooldown
  const int64_t start = total_steps - std::max<int64_t>(cfg.cooldown_steps, 0);
  if (step < start) return base;
  const int64_t es = total_steps - start;
  if (es <= 0) return cfg.min_lr;
  const int64_t e = std::min(step - start, es);
  const double decay = 1.0 - static_cast<double>(e) / static_cast<double>(es);
  return cfg.min_lr + (base - cfg.min_lr) * decay;
}

}  // namespace retclip::train
