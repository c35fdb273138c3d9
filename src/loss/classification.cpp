// Fine-tuning losses (see classification.hpp): label smoothing, CE / BCE on logits,
// balanced class weights, mixup / cutmix.
#include "retclip/loss/classification.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "retclip/util/error.hpp"

namespace retclip::loss {

at::Tensor smooth_targets(const at::Tensor& t, double eps, bool multi_label) {
  if (eps <= 0) return t;
  if (multi_label) return t * (1 - eps) + eps / 2;
  return t * (1 - eps) + eps / static_cast<double>(t.size(1));
}

at::Tensor classification_loss(const at::Tensor& logits, const at::Tensor& targets,
                               bool multi_label, const at::Tensor& class_weight) {
  RETCLIP_CHECK(logits.sizes() == targets.sizes(),
                "expected logits and targets of one shape but got ", logits.sizes(), " and ",
                targets.sizes());
  at::Tensor z = logits.to(torch::kFloat), t = targets.to(z.options());
  if (multi_label) {
    at::Tensor pw = class_weight.defined() ? class_weight.to(z.options()) : at::Tensor();
    return torch::binary_cross_entropy_with_logits(z, t, {}, pw);
  }
  at::Tensor nll = -(t * torch::log_softmax(z, 1));
  if (class_weight.defined()) nll = nll * class_weight.to(z.options()).unsqueeze(0);
  return nll.sum(1).mean();
}

at::Tensor balanced_class_weights(const at::Tensor& targets, bool multi_label) {
  at::Tensor t = targets.to(torch::kDouble);
  const double n = static_cast<double>(t.size(0));
  at::Tensor pos = t.sum(0);
  if (multi_label)
    return torch::where(pos > 0, (n - pos) / pos.clamp_min(1), torch::ones_like(pos))
        .to(torch::kFloat);
  const double present = (pos > 0).sum().item<double>();
  return torch::where(pos > 0, n / (present * pos.clamp_min(1)), torch::ones_like(pos))
      .to(torch::kFloat);
}

namespace {

// Beta(a, a) from two gamma draws (std has no beta distribution).
double beta_draw(std::mt19937_64& rng, double a) {
  std::gamma_distribution<double> g(a, 1.0);
  const double x = g(rng), y = g(rng);
  return x + y > 0 ? x / (x + y) : 0.5;
}

}  // namespace

MixedBatch mix_batch(const at::Tensor& left, const at::Tensor& right, const at::Tensor& targets,
                     double mixup_alpha, double cutmix_alpha, uint64_t seed) {
  MixedBatch m{left, right, targets, 1.0, false};
  if (mixup_alpha <= 0 && cutmix_alpha <= 0) return m;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  m.cutmix = cutmix_alpha > 0 && (mixup_alpha <= 0 || u(rng) < 0.5);
  double lam = beta_draw(rng, m.cutmix ? cutmix_alpha : mixup_alpha);
  if (!m.cutmix) {
    auto mix = [&](const at::Tensor& x) {
      return x.defined() ? x * lam + x.flip(0) * (1 - lam) : x;
    };
    m.left = mix(left);
    m.right = mix(right);
  } else {
    // timm rand_bbox: a box of side ratio sqrt(1 - lam) around a uniform centre, clipped.
    const int64_t h = left.size(2), w = left.size(3);
    const double cut = std::sqrt(1 - lam);
    const int64_t ch = static_cast<int64_t>(h * cut), cw = static_cast<int64_t>(w * cut);
    const int64_t cy = static_cast<int64_t>(u(rng) * h), cx = static_cast<int64_t>(u(rng) * w);
    const int64_t y0 = std::clamp<int64_t>(cy - ch / 2, 0, h),
                  y1 = std::clamp<int64_t>(cy + ch / 2, 0, h);
    const int64_t x0 = std::clamp<int64_t>(cx - cw / 2, 0, w),
                  x1 = std::clamp<int64_t>(cx + cw / 2, 0, w);
    auto paste = [&](const at::Tensor& x) {
      if (!x.defined()) return x;
      at::Tensor out = x.clone();
      using torch::indexing::Slice;
      out.index_put_({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)},
                     x.flip(0).index({Slice(), Slice(), Slice(y0, y1), Slice(x0, x1)}));
      return out;
    };
    m.left = paste(left);
    m.right = paste(right);
    lam = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  }
  m.lam = lam;
  m.targets = targets * lam + targets.flip(0) * (1 - lam);
  return m;
}

}  // namespace retclip::loss
