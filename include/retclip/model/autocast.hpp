// Numeric precision of a forward pass: fp32, or CUDA autocast to bf16 / fp16. Training,
// validation and inference (`retclip predict`, results.json) run their forwards through
// one AutocastScope, so a model scores the same wherever it is run from.
//
//   { model::AutocastScope scope(model::Precision::kBf16, device);  logits = net->forward(x); }
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "retclip/config/enums.hpp"

namespace retclip::model {

/// fp32, or autocast to bf16 / fp16 (CUDA only); names are config::name's.
using Precision = config::Precision;

/// kAuto as a run on `device` takes it (bf16 on CUDA, fp32 elsewhere); others unchanged.
Precision resolve_precision(Precision p, const c10::Device& device);

/// Enables autocast for CUDA forward passes in bf16 / fp16 for its lifetime (a no-op for
/// fp32 or on CPU) and restores the previous state. `p` is resolved (not kAuto).
class AutocastScope {
 public:
  AutocastScope(Precision p, const c10::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false, prev_enabled_ = false;
  c10::ScalarType prev_dtype_ = c10::kFloat;
};

}  // namespace retclip::model
