// Tie-aware recall@k over paired embeddings, computed in row chunks so that N x N never
// has to fit in memory; candidate texts are the distinct reports.
#include "retclip/eval/retrieval.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "retclip/util/error.hpp"

namespace retclip::eval {

double RecallResult::mean_recall() const {
  if (i2t.empty()) return 0.0;
  double s = 0;
  for (const auto& [k, v] : i2t) s += (v + t2i.at(k)) / 2.0;
  return s / static_cast<double>(i2t.size());
}

namespace {

at::Tensor normalise(const at::Tensor& x) {
  at::Tensor f = x.detach().to(at::kFloat);
  return f / f.norm(2, {1}, true).clamp_min(1e-12);
}

// Renumbers ids 0..G-1 in order of first appearance.
std::vector<int64_t> compact(const std::vector<int64_t>& ids) {
  std::unordered_map<int64_t, int64_t> map;
  std::vector<int64_t> out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    out[i] = map.emplace(ids[i], static_cast<int64_t>(map.size())).first->second;
  return out;
}

void append(std::vector<int64_t>& out, const at::Tensor& counts) {
  at::Tensor c = counts.to(at::kCPU, at::kLong).contiguous();
  out.insert(out.end(), c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Probability that a block of `others` + `own` tied candidates, put in uniformly random
// order, has an own one among its first `slots` places: 1 - C(others, slots) /
// C(others + own, slots). This is the expected recall when ties are broken at random.
double hit_probability(int64_t slots, int64_t others, int64_t own) {
  if (slots <= 0 || own <= 0) return 0.0;
  if (slots > others) return 1.0;
  double miss = 1;
  for (int64_t i = 0; i < slots; ++i)
    miss *= static_cast<double>(others - i) / static_cast<double>(others + own - i);
  return 1.0 - miss;
}

}  // namespace

std::vector<int64_t> group_texts(const std::vector<std::string>& texts) {
  std::unordered_map<std::string, int64_t> map;
  std::vector<int64_t> out(texts.size());
  for (size_t i = 0; i < texts.size(); ++i)
    out[i] = map.emplace(texts[i], static_cast<int64_t>(map.size())).first->second;
  return out;
}

std::vector<int64_t> group_embeddings(const at::Tensor& txt, double tol, int64_t chunk) {
  RETCLIP_CHECK(txt.dim() == 2, "group_embeddings expects [N,E] but got ", txt.sizes());
  at::Tensor b = normalise(txt);
  std::vector<int64_t> first;
  first.reserve(b.size(0));
  for (int64_t s = 0; s < b.size(0); s += chunk) {
    const int64_t e = std::min(b.size(0), s + chunk);
    at::Tensor same = (at::matmul(b.slice(0, s, e), b.t()) >= 1.0 - tol).to(at::kFloat);  // [c, N]
    // argmax returns the first maximal index: the first row this one matches (itself at worst).
    at::Tensor f = same.argmax(1).cpu().contiguous();
    first.insert(first.end(), f.data_ptr<int64_t>(), f.data_ptr<int64_t>() + f.numel());
  }
  return compact(first);
}

RecallResult retrieval_recall(const at::Tensor& img, const at::Tensor& txt,
                              const std::vector<int64_t>& ks,
                              const std::vector<int64_t>& text_groups, int64_t chunk) {
  RETCLIP_CHECK(img.dim() == 2 && txt.dim() == 2 && img.sizes() == txt.sizes(),
                "retrieval_recall expects two [N,E] tensors of the same shape but got ",
                img.sizes(), " and ", txt.sizes());
  const int64_t n = img.size(0);
  RETCLIP_CHECK(n > 0, "retrieval_recall needs at least one pair");
  RETCLIP_CHECK(text_groups.empty() || static_cast<int64_t>(text_groups.size()) == n,
                "retrieval_recall got ", text_groups.size(), " text groups for ", n, " pairs");
  for (int64_t k : ks) RETCLIP_CHECK(k >= 1, "recall@k needs k >= 1 but got ", k);
  const std::vector<int64_t> groups =
      text_groups.empty() ? group_embeddings(txt) : compact(text_groups);
  const int64_t g = *std::max_element(groups.begin(), groups.end()) + 1;

  at::Tensor a = normalise(img), b = normalise(txt);
  at::Tensor gid = at::tensor(groups, at::kLong).to(a.device());  // [N]
  // One embedding per distinct report: its first row.
  std::vector<int64_t> first_row(g, -1), size(g, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (first_row[groups[i]] < 0) first_row[groups[i]] = i;
    ++size[groups[i]];
  }
  at::Tensor reports =
      b.index_select(0, at::tensor(first_row, at::kLong).to(b.device()));  // [G, E]

  // image->text: how many reports score above the own one (h) and level with it (t).
  std::vector<int64_t> h_i2t, t_i2t;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    at::Tensor sim = at::matmul(a.slice(0, s, e), reports.t());       // [c, G]
    at::Tensor own = sim.gather(1, gid.slice(0, s, e).unsqueeze(1));  // [c, 1]
    append(h_i2t, (sim > own).sum(1));
    append(t_i2t, (sim == own).sum(1) - 1);
  }
  // text->image: images of other reports above the best own image (h), level with it
  // (t), and own images level with it (m).
  std::vector<int64_t> h_t2i, t_t2i, m_t2i;
  for (int64_t s = 0; s < g; s += chunk) {
    const int64_t e = std::min(g, s + chunk);
    at::Tensor sim = at::matmul(reports.slice(0, s, e), a.t());                          // [c, N]
    at::Tensor mine = at::arange(s, e, gid.options()).unsqueeze(1) == gid.unsqueeze(0);  // [c, N]
    at::Tensor best =
        sim.masked_fill(~mine, -std::numeric_limits<float>::infinity()).amax(1, true);  // [c, 1]
    at::Tensor level = sim == best;
    append(h_t2i, (sim > best).sum(1));
    append(t_t2i, (level & ~mine).sum(1));
    append(m_t2i, (level & mine).sum(1));
  }

  RecallResult r;
  r.n = n;
  r.distinct_texts = g;
  for (int64_t k : ks) {
    // Each image weighs 1 / (images of its report) / G: the mean over reports.
    double i2t = 0;
    for (int64_t i = 0; i < n; ++i)
      i2t += hit_probability(k - h_i2t[i], t_i2t[i], 1) / static_cast<double>(size[groups[i]] * g);
    double t2i = 0;
    for (int64_t q = 0; q < g; ++q) t2i += hit_probability(k - h_t2i[q], t_t2i[q], m_t2i[q]);
    r.i2t[k] = i2t;
    r.t2i[k] = t2i / static_cast<double>(g);
    r.chance[k] = static_cast<double>(std::min(k, g)) / static_cast<double>(g);
    double c = 0;
    for (int64_t q = 0; q < g; ++q) c += hit_probability(k, n - size[q], size[q]);
    r.chance_t2i[k] = c / static_cast<double>(g);
  }
  return r;
}
}  // namespace retclip::eval
