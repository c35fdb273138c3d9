// Precision names and the autocast scope (see autocast.hpp).
#include "retclip/model/autocast.hpp"

#include <ATen/autocast_mode.h>

#include "retclip/util/error.hpp"

namespace retclip::model {

Precision resolve_precision(Precision p, const c10::Device& device) {
  if (p != Precision::kAuto) return p;
  return device.is_cuda() ? Precision::kBf16 : Precision::kFp32;
}

AutocastScope::AutocastScope(Precision p, const c10::Device& device) {
  RETCLIP_CHECK(p != Precision::kAuto, "AutocastScope needs a resolved precision (resolve_precision)");
  if (p == Precision::kFp32 || !device.is_cuda()) return;
  active_ = true;
  prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, p == Precision::kBf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
  at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
}

}  // namespace retclip::model
