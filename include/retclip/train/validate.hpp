// Validation: loss per level and in-batch accuracies (as the reference reports them),
// plus recall@1/5/10 over the whole split at patient level and per eye.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "retclip/eval/retrieval.hpp"
#include "retclip/loss/tripartite.hpp"
#include "retclip/model/level.hpp"
#include "retclip/model/retclip.hpp"
#include "retclip/train/step.hpp"

namespace retclip::train {

struct EvalResult {
  int64_t patients = 0;
  double loss = 0;                             ///< mean over batches of the weighted total
  model::PerLevel<double> level_loss;          ///< batch means
  model::PerLevel<double> acc_i2t, acc_t2i;    ///< in-batch top-1, batch means
  model::PerLevel<eval::RecallResult> recall;  ///< over the whole split (eyes: present ones)

  /// Flat "val/..." metrics for the sinks.
  std::map<std::string, double> metrics() const;
  /// Human-readable table with chance levels.
  std::string to_string() const;
};

/// Supplies batches of one pass over a split: returns false when done. Rows beyond
/// `limit` (padding by the sampler) are ignored by the caller.
using BatchSource = std::function<bool(MicroBatch* out)>;

/// Runs the model in eval mode over the batches (restoring train mode afterwards) and
/// computes losses, accuracies and recall@{1,5,10} over at most `limit` patients.
EvalResult evaluate(model::RetClip& net, const BatchSource& next, int64_t limit,
                    const loss::TripartiteLossOptions& options, Precision precision);

}  // namespace retclip::train
