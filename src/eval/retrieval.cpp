// recall@k over paired embeddings, computed in row chunks so N x N never has to fit.
#include "retclip/eval/retrieval.hpp"

#include <ATen/ATen.h>

#include <algorithm>

#include "retclip/util/error.hpp"

namespace retclip::eval {

double RecallResult::mean_recall() const {
  if (i2t.empty()) return 0.0;
  double s = 0;
  for (const auto& [k, v] : i2t) s += (v + t2i.at(k)) / 2.0;
  return s / static_cast<double>(i2t.size());
}

namespace {

// For each row i of q, the number of columns of keys scoring strictly higher than
// keys[i] (the rank of the true pair, 0 = best).
at::Tensor ranks_of_pairs(const at::Tensor& q, const at::Tensor& keys, int64_t chunk) {
  const int64_t n = q.size(0);
  std::vector<at::Tensor> out;
  for (int64_t s = 0; s < n; s += chunk) {
    int64_t e = std::min(n, s + chunk);
    at::Tensor sim = at::matmul(q.slice(0, s, e), keys.t());              // [c, N]
    at::Tensor idx = at::arange(s, e, sim.options().dtype(at::kLong));
    at::Tensor own = sim.gather(1, idx.unsqueeze(1));                      // [c, 1]
    out.push_back((sim > own).sum(1));
  }
  return at::cat(out);
}

}  // namespace

RecallResult retrieval_recall(const at::Tensor& img, const at::Tensor& txt,
                              const std::vector<int64_t>& ks, int64_t chunk) {
  RETCLIP_CHECK(img.dim() == 2 && txt.dim() == 2 && img.sizes() == txt.sizes(),
                "retrieval_recall expects two [N,E] tensors of the same shape but got ",
                img.sizes(), " and ", txt.sizes());
  RETCLIP_CHECK(img.size(0) > 0, "retrieval_recall needs at least one pair");
  auto normalise = [](const at::Tensor& x) {
    at::Tensor f = x.detach().to(at::kFloat);
    return f / f.norm(2, {1}, true).clamp_min(1e-12);
  };
  at::Tensor a = normalise(img), b = normalise(txt);
  at::Tensor r_i2t = ranks_of_pairs(a, b, chunk), r_t2i = ranks_of_pairs(b, a, chunk);
  RecallResult r;
  r.n = img.size(0);
  for (int64_t k : ks) {
    RETCLIP_CHECK(k >= 1, "recall@k needs k >= 1 but got ", k);
    r.i2t[k] = (r_i2t < k).to(at::kDouble).mean().item<double>();
    r.t2i[k] = (r_t2i < k).to(at::kDouble).mean().item<double>();
    r.chance[k] = static_cast<double>(std::min(k, r.n)) / static_cast<double>(r.n);
  }
  return r;
}

}  // namespace retclip::eval
