// Tripartite contrastive loss (RET-CLIP) with eye masks and an optional local-rows
// mode so that the same code serves one process and gathered multi-rank features.
#include "retclip/loss/tripartite.hpp"

#include <torch/nn/functional/loss.h>

#include "retclip/util/error.hpp"

namespace retclip::loss {
namespace {

double top1(const at::Tensor& logits, const at::Tensor& labels) {
  if (logits.size(0) == 0) return 0.0;
  return logits.argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
}

// Multi-positive top-1: the arg-max column is one of the row's positives.
double top1_of_targets(const at::Tensor& logits, const at::Tensor& targets) {
  if (logits.size(0) == 0) return 0.0;
  return targets.gather(1, logits.argmax(1, true)).gt(0).to(at::kDouble).mean().item<double>();
}

}  // namespace

LevelLoss contrastive_level(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                            const at::Tensor& valid, int64_t local_begin, int64_t local_end,
                            const TripartiteLossOptions& options, const at::Tensor& report_id) {
  const int64_t n = img.size(0);
  RETCLIP_CHECK(img.dim() == 2 && txt.sizes() == img.sizes(),
                "expected image and text features of equal shape [N, E] but got ", img.sizes(),
                " and ", txt.sizes());
  if (local_end < 0) local_end = n;
  if (!options.local_loss()) {
    local_begin = 0;
    local_end = n;
  }
  RETCLIP_CHECK(0 <= local_begin && local_begin <= local_end && local_end <= n,
                "expected a local row range inside [0, ", n, "] but got [", local_begin, ", ",
                local_end, ")");
  at::Tensor ok = valid.defined() ? valid.to(img.device(), at::kBool)
                                  : at::ones({n}, img.options().dtype(at::kBool));
  RETCLIP_CHECK(ok.dim() == 1 && ok.size(0) == n, "expected a validity mask [", n, "] but got ",
                ok.sizes());
  auto cols = ok.nonzero().view(-1);  // global rows taking part, sorted
  // Query rows: valid rows inside the local range; their positions among `cols` are
  // contiguous because `cols` is sorted.
  const int64_t first = ok.slice(0, 0, local_begin).sum().item<int64_t>();
  const int64_t count = ok.slice(0, local_begin, local_end).sum().item<int64_t>();
  auto s = scale.clamp_max(options.logit_scale_max()).exp();
  LevelLoss out;
  out.rows = count;
  if (count == 0) {  // keep the graph (and gradient shapes) alive with an exact zero
    out.loss = (img.sum() + txt.sum() + s) * 0.0;
    return out;
  }
  auto img_v = img.index_select(0, cols), txt_v = txt.index_select(0, cols);
  auto labels = at::arange(first, first + count, img.options().dtype(at::kLong));
  auto logits_i = s * img_v.slice(0, first, first + count).matmul(txt_v.t());  // [count, M]
  auto logits_t = s * txt_v.slice(0, first, first + count).matmul(img_v.t());
  // With duplicates_positive, the targets of a query row are spread evenly over every
  // column whose report id equals its own (the row itself included); the matrix is
  // symmetric, so image->text and text->image share it.
  at::Tensor targets;
  if (options.duplicates_positive() && report_id.defined()) {
    RETCLIP_CHECK(report_id.dim() == 1 && report_id.size(0) == n, "expected report ids [", n,
                  "] but got ", report_id.sizes());
    auto ids = report_id.to(img.device(), at::kLong).index_select(0, cols);
    auto same = ids.slice(0, first, first + count).unsqueeze(1).eq(ids.unsqueeze(0));
    auto m = same.to(logits_i.scalar_type());
    targets = m / m.sum(1, true);
  }
  if (targets.defined()) {
    const double norm = options.local_loss() ? static_cast<double>(options.world_size()) /
                                                   (2.0 * static_cast<double>(cols.size(0)))
                                             : 1.0 / (2.0 * static_cast<double>(count));
    out.loss = (at::cross_entropy_loss(logits_i, targets, {}, at::Reduction::Sum) +
                at::cross_entropy_loss(logits_t, targets, {}, at::Reduction::Sum)) *
               norm;
    at::NoGradGuard no_grad;
    out.acc_i2t = top1_of_targets(logits_i, targets);
    out.acc_t2i = top1_of_targets(logits_t, targets);
    return out;
  }
  if (options.local_loss()) {
    // This rank's share of the global mean (see TripartiteLossOptions::world_size). Also
    // when this rank holds every valid row: the other ranks then contribute 0, and the
    // mean over ranks must still be the global loss, so the share is world times it.
    const double norm = static_cast<double>(options.world_size()) /
                        (2.0 * static_cast<double>(cols.size(0)));
    out.loss = (at::cross_entropy_loss(logits_i, labels, {}, at::Reduction::Sum) +
                at::cross_entropy_loss(logits_t, labels, {}, at::Reduction::Sum)) *
               norm;
  } else {
    out.loss =
        (at::cross_entropy_loss(logits_i, labels) + at::cross_entropy_loss(logits_t, labels)) /
        2.0;
  }
  {
    at::NoGradGuard no_grad;
    out.acc_i2t = top1(logits_i, labels);
    out.acc_t2i = top1(logits_t, labels);
  }
  return out;
}

LossOutput tripartite_loss(const model::Embeddings& global, const TripartiteLossOptions& options,
                           int64_t local_begin, int64_t local_end) {
  LossOutput out;
  for (model::Level l : model::kLevels) {
    out.level[l] =
        contrastive_level(global.img[l], global.txt[l], global.logit_scale[l], global.valid(l),
                          local_begin, local_end, options, global.report_id[l]);
    at::Tensor term = options.weight(l) * out.level[l].loss;
    out.total = out.total.defined() ? out.total + term : term;
  }
  return out;
}

double TripartiteLossOptions::weight(model::Level l) const {
  if (l == model::Level::kLeft) return weight_left_;
  if (l == model::Level::kRight) return weight_right_;
  return weight_patient_;
}

}  // namespace retclip::loss
