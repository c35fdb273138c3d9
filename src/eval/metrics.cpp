// Classification metrics on CPU doubles. AUROC is the Mann-Whitney statistic with
// mid-ranks for ties, which equals the trapezoid area scikit-learn integrates.
#include "retclip/eval/metrics.hpp"

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "retclip/util/error.hpp"

namespace retclip::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(double num, double den) {
  return den > 0 ? num / den : kNaN;
}

// [N,C] tensor as row-major doubles.
std::vector<double> to_doubles(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// Column c of a row-major [N,C] matrix, restricted to `rows` (all rows when empty).
std::vector<double> column(const std::vector<double>& m, int64_t cols, int64_t c,
                           const std::vector<int64_t>& rows, int64_t n) {
  std::vector<double> out;
  if (rows.empty()) {
    out.resize(n);
    for (int64_t i = 0; i < n; ++i) out[i] = m[i * cols + c];
  } else {
    out.reserve(rows.size());
    for (int64_t i : rows) out.push_back(m[i * cols + c]);
  }
  return out;
}

// Indices ordering `score` from highest to lowest.
std::vector<int64_t> order_desc(const std::vector<double>& score) {
  std::vector<int64_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  return idx;
}

nlohmann::json num_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

nlohmann::json vec_json(const std::vector<double>& v, const std::vector<std::string>& names) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < v.size(); ++i)
    j[i < names.size() ? names[i] : std::to_string(i)] = num_or_null(v[i]);
  return j;
}

struct SingleLabelInput {
  int64_t n = 0, c = 0;
  std::vector<double> scores;
  std::vector<int64_t> labels;
};

SingleLabelInput single_label_input(const at::Tensor& scores, const at::Tensor& labels) {
  RETCLIP_CHECK(scores.dim() == 2 && labels.dim() == 1 && scores.size(0) == labels.size(0),
                "single-label metrics expect scores [N,C] and labels [N] but got ", scores.sizes(),
                " and ", labels.sizes());
  SingleLabelInput in;
  in.n = scores.size(0);
  in.c = scores.size(1);
  RETCLIP_CHECK(in.n > 0 && in.c > 0, "single-label metrics need at least one row and class");
  in.scores = to_doubles(scores);
  at::Tensor l = labels.detach().to(at::kCPU, at::kLong).contiguous();
  in.labels.assign(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + in.n);
  for (int64_t i = 0; i < in.n; ++i)
    RETCLIP_CHECK(in.labels[i] >= 0 && in.labels[i] < in.c, "label ", in.labels[i], " of row ", i,
                  " is outside the ", in.c, " classes");
  return in;
}

SingleLabelMetrics single_label_on(const SingleLabelInput& in, const std::vector<int64_t>& rows) {
  const int64_t n = rows.empty() ? in.n : static_cast<int64_t>(rows.size());
  auto row = [&](int64_t i) { return rows.empty() ? i : rows[i]; };
  SingleLabelMetrics m;
  m.n = n;
  m.classes = in.c;
  std::vector<int64_t> truth(n), pred(n);
  for (int64_t i = 0; i < n; ++i) {
    const double* s = &in.scores[row(i) * in.c];
    truth[i] = in.labels[row(i)];
    pred[i] = std::max_element(s, s + in.c) - s;  // first index of the largest
  }
  m.auroc.resize(in.c);
  m.aupr.resize(in.c);
  std::vector<uint8_t> pos(n);
  for (int64_t c = 0; c < in.c; ++c) {
    for (int64_t i = 0; i < n; ++i) pos[i] = truth[i] == c;
    auto col = column(in.scores, in.c, c, rows, in.n);
    m.auroc[c] = auroc(col, pos);
    m.aupr[c] = std::isfinite(m.auroc[c]) ? average_precision(col, pos) : kNaN;
  }
  m.auroc_macro = finite_mean(m.auroc);
  m.aupr_macro = finite_mean(m.aupr);
  m.confusion = confusion_matrix(truth, pred, in.c);
  m.accuracy = accuracy(m.confusion);
  m.balanced_accuracy = balanced_accuracy(m.confusion);
  m.f1_macro = macro_f1(m.confusion);
  m.kappa = cohen_kappa(m.confusion, KappaWeights::kNone);
  m.kappa_linear = cohen_kappa(m.confusion, KappaWeights::kLinear);
  m.kappa_quadratic = cohen_kappa(m.confusion, KappaWeights::kQuadratic);
  m.f1 = per_class_f1(m.confusion);
  m.sensitivity = sensitivity(m.confusion);
  m.specificity = specificity(m.confusion);
  return m;
}

struct MultiLabelInput {
  int64_t n = 0, l = 0;
  std::vector<double> scores, targets;
};

MultiLabelInput multi_label_input(const at::Tensor& scores, const at::Tensor& targets) {
  RETCLIP_CHECK(scores.dim() == 2 && scores.sizes() == targets.sizes(),
                "multi-label metrics expect scores and targets of the same shape [N,L] but got ",
                scores.sizes(), " and ", targets.sizes());
  MultiLabelInput in;
  in.n = scores.size(0);
  in.l = scores.size(1);
  in.scores = to_doubles(scores);
  in.targets = to_doubles(targets);
  return in;
}

// F1 of "score >= t" against pos; NaN without positives.
double f1_at(const std::vector<double>& score, const std::vector<uint8_t>& pos, double t) {
  int64_t tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < score.size(); ++i) {
    const bool p = score[i] >= t;
    tp += p && pos[i];
    fp += p && !pos[i];
    fn += !p && pos[i];
  }
  if (tp + fn == 0) return kNaN;
  return 2.0 * tp / static_cast<double>(2 * tp + fp + fn);
}

MultiLabelMetrics multi_label_on(const MultiLabelInput& in, const std::vector<double>& thresholds,
                                 const std::vector<int64_t>& rows) {
  RETCLIP_CHECK(static_cast<int64_t>(thresholds.size()) == in.l, "expected ", in.l,
                " thresholds (one per label) but got ", thresholds.size());
  MultiLabelMetrics m;
  m.n = rows.empty() ? in.n : static_cast<int64_t>(rows.size());
  m.labels = in.l;
  m.threshold = thresholds;
  for (int64_t l = 0; l < in.l; ++l) {
    auto col = column(in.scores, in.l, l, rows, in.n);
    auto tcol = column(in.targets, in.l, l, rows, in.n);
    std::vector<uint8_t> pos(tcol.size());
    for (size_t i = 0; i < tcol.size(); ++i) pos[i] = tcol[i] > 0.5;
    m.auroc.push_back(auroc(col, pos));
    m.aupr.push_back(std::isfinite(m.auroc.back()) ? average_precision(col, pos) : kNaN);
    m.f1.push_back(f1_at(col, pos, thresholds[l]));
  }
  m.auroc_macro = finite_mean(m.auroc);
  m.aupr_macro = finite_mean(m.aupr);
  m.f1_macro = finite_mean(m.f1);
  return m;
}

std::vector<double> percentile_pair(std::vector<double> v, double level) {
  std::sort(v.begin(), v.end());
  auto pct = [&](double q) {
    const double pos = q * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(v.size() - 1, lo + 1);
    return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
  };
  return {pct((1.0 - level) / 2.0), pct((1.0 + level) / 2.0)};
}

std::map<std::string, Interval> bootstrap_all(
    int64_t n, const std::function<std::map<std::string, double>(const std::vector<int64_t>&)>& f,
    const BootstrapOptions& o) {
  RETCLIP_CHECK(o.rounds > 0 && o.level > 0 && o.level < 1,
                "bootstrap needs rounds > 0 and 0 < level < 1 but got rounds ", o.rounds,
                ", level ", o.level);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int64_t> pick(0, n - 1);
  std::map<std::string, std::vector<double>> values;
  std::vector<int64_t> rows(n);
  for (int64_t r = 0; r < o.rounds; ++r) {
    for (auto& i : rows) i = pick(rng);
    for (const auto& [k, v] : f(rows))
      if (std::isfinite(v)) values[k].push_back(v);
  }
  std::map<std::string, Interval> out;
  for (auto& [k, v] : values) {
    auto p = percentile_pair(v, o.level);
    out[k] = Interval{p[0], p[1], static_cast<int64_t>(v.size())};
  }
  return out;
}

}  // namespace

double finite_mean(const std::vector<double>& v) {
  double s = 0;
  int64_t k = 0;
  for (double x : v)
    if (std::isfinite(x)) s += x, ++k;
  return k ? s / static_cast<double>(k) : kNaN;
}

double auroc(const std::vector<double>& score, const std::vector<uint8_t>& positive) {
  RETCLIP_CHECK(score.size() == positive.size(), "auroc: ", score.size(), " scores but ",
                positive.size(), " labels");
  const int64_t n = static_cast<int64_t>(score.size());
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score[a] < score[b]; });
  // Sum of the (1-based, mid-rank) ranks of the positives.
  double rank_sum = 0;
  int64_t npos = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && score[idx[j]] == score[idx[i]]) ++j;
    const double mid = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    for (int64_t k = i; k < j; ++k)
      if (positive[idx[k]]) rank_sum += mid, ++npos;
    i = j;
  }
  const int64_t nneg = n - npos;
  if (npos == 0 || nneg == 0) return kNaN;
  const double u = rank_sum - static_cast<double>(npos) * static_cast<double>(npos + 1) / 2.0;
  return u / (static_cast<double>(npos) * static_cast<double>(nneg));
}

namespace {

// Walks the thresholds from the highest score down, one step per distinct score (every
// row tied at a threshold enters together), calling step(tp, fp) with the positives and
// negatives at or above it.
template <class Step>
void for_each_threshold(const std::vector<double>& score, const std::vector<uint8_t>& positive,
                        Step step) {
  const auto idx = order_desc(score);
  const int64_t n = static_cast<int64_t>(idx.size());
  int64_t tp = 0, fp = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && score[idx[j]] == score[idx[i]]) {
      (positive[idx[j]] ? tp : fp) += 1;
      ++j;
    }
    step(tp, fp);
    i = j;
  }
}

}  // namespace

RocCurve roc_curve(const std::vector<double>& score, const std::vector<uint8_t>& positive) {
  RETCLIP_CHECK(score.size() == positive.size(), "roc_curve: ", score.size(), " scores but ",
                positive.size(), " labels");
  const int64_t npos = std::count(positive.begin(), positive.end(), uint8_t{1});
  const int64_t nneg = static_cast<int64_t>(score.size()) - npos;
  RocCurve c;
  if (npos == 0 || nneg == 0) return c;
  c.fpr.push_back(0);
  c.tpr.push_back(0);
  for_each_threshold(score, positive, [&](int64_t tp, int64_t fp) {
    c.fpr.push_back(static_cast<double>(fp) / static_cast<double>(nneg));
    c.tpr.push_back(static_cast<double>(tp) / static_cast<double>(npos));
  });
  return c;
}

double average_precision(const std::vector<double>& score, const std::vector<uint8_t>& positive) {
  RETCLIP_CHECK(score.size() == positive.size(), "average_precision: ", score.size(),
                " scores but ", positive.size(), " labels");
  const int64_t npos = std::count(positive.begin(), positive.end(), uint8_t{1});
  if (npos == 0) return kNaN;
  double ap = 0, prev_recall = 0;
  for_each_threshold(score, positive, [&](int64_t tp, int64_t fp) {
    const double recall = static_cast<double>(tp) / static_cast<double>(npos);
    ap += (recall - prev_recall) * static_cast<double>(tp) / static_cast<double>(tp + fp);
    prev_recall = recall;
  });
  return ap;
}

int64_t ConfusionMatrix::total() const {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}
int64_t ConfusionMatrix::row_sum(int64_t t) const {
  int64_t s = 0;
  for (int64_t p = 0; p < classes; ++p) s += at(t, p);
  return s;
}
int64_t ConfusionMatrix::col_sum(int64_t p) const {
  int64_t s = 0;
  for (int64_t t = 0; t < classes; ++t) s += at(t, p);
  return s;
}

ConfusionMatrix confusion_matrix(const std::vector<int64_t>& truth,
                                 const std::vector<int64_t>& pred, int64_t classes) {
  RETCLIP_CHECK(truth.size() == pred.size(), "confusion_matrix: ", truth.size(),
                " true labels but ", pred.size(), " predictions");
  ConfusionMatrix cm;
  cm.classes = classes;
  cm.counts.assign(classes * classes, 0);
  for (size_t i = 0; i < truth.size(); ++i) {
    RETCLIP_CHECK(truth[i] >= 0 && truth[i] < classes && pred[i] >= 0 && pred[i] < classes,
                  "confusion_matrix: row ", i, " has class ", truth[i], " / ", pred[i],
                  " outside [0, ", classes, ")");
    cm.counts[truth[i] * classes + pred[i]] += 1;
  }
  return cm;
}

double accuracy(const ConfusionMatrix& cm) {
  int64_t d = 0;
  for (int64_t c = 0; c < cm.classes; ++c) d += cm.at(c, c);
  return ratio(static_cast<double>(d), static_cast<double>(cm.total()));
}

double balanced_accuracy(const ConfusionMatrix& cm) {
  return finite_mean(sensitivity(cm));
}

std::vector<double> per_class_f1(const ConfusionMatrix& cm) {
  std::vector<double> f(cm.classes);
  for (int64_t c = 0; c < cm.classes; ++c) {
    const double tp = static_cast<double>(cm.at(c, c));
    const double fp = static_cast<double>(cm.col_sum(c)) - tp;
    const double fn = static_cast<double>(cm.row_sum(c)) - tp;
    f[c] = ratio(2 * tp, 2 * tp + fp + fn);
  }
  return f;
}

double macro_f1(const ConfusionMatrix& cm) {
  return finite_mean(per_class_f1(cm));
}

std::vector<double> sensitivity(const ConfusionMatrix& cm) {
  std::vector<double> s(cm.classes);
  for (int64_t c = 0; c < cm.classes; ++c)
    s[c] = ratio(static_cast<double>(cm.at(c, c)), static_cast<double>(cm.row_sum(c)));
  return s;
}

std::vector<double> specificity(const ConfusionMatrix& cm) {
  std::vector<double> s(cm.classes);
  const double n = static_cast<double>(cm.total());
  for (int64_t c = 0; c < cm.classes; ++c) {
    const double tp = static_cast<double>(cm.at(c, c));
    const double fp = static_cast<double>(cm.col_sum(c)) - tp;
    const double fn = static_cast<double>(cm.row_sum(c)) - tp;
    s[c] = ratio(n - tp - fp - fn, n - tp - fn);
  }
  return s;
}

double cohen_kappa(const ConfusionMatrix& cm, KappaWeights weights) {
  const int64_t k = cm.classes;
  const double n = static_cast<double>(cm.total());
  if (n == 0) return kNaN;
  double observed = 0, expected = 0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const double d = static_cast<double>(i > j ? i - j : j - i);
      const double w = weights == KappaWeights::kNone     ? (i == j ? 0.0 : 1.0)
                       : weights == KappaWeights::kLinear ? d
                                                          : d * d;
      observed += w * static_cast<double>(cm.at(i, j));
      expected += w * static_cast<double>(cm.row_sum(i)) * static_cast<double>(cm.col_sum(j)) / n;
    }
  return expected > 0 ? 1.0 - observed / expected : kNaN;
}

std::map<std::string, double> SingleLabelMetrics::scalars() const {
  return {{"auroc_macro", auroc_macro},   {"aupr_macro", aupr_macro},
          {"accuracy", accuracy},         {"balanced_accuracy", balanced_accuracy},
          {"f1_macro", f1_macro},         {"kappa", kappa},
          {"kappa_linear", kappa_linear}, {"kappa_quadratic", kappa_quadratic}};
}

std::map<std::string, double> MultiLabelMetrics::scalars() const {
  return {{"auroc_macro", auroc_macro}, {"aupr_macro", aupr_macro}, {"f1_macro", f1_macro}};
}

SingleLabelMetrics single_label_metrics(const at::Tensor& scores, const at::Tensor& labels) {
  return single_label_on(single_label_input(scores, labels), {});
}

std::vector<double> tune_f1_thresholds(const at::Tensor& scores, const at::Tensor& targets) {
  MultiLabelInput in = multi_label_input(scores, targets);
  std::vector<double> out(in.l, 0.5);
  for (int64_t l = 0; l < in.l; ++l) {
    auto col = column(in.scores, in.l, l, {}, in.n);
    auto tcol = column(in.targets, in.l, l, {}, in.n);
    int64_t npos = 0;
    for (double t : tcol) npos += t > 0.5;
    if (npos == 0) continue;
    auto idx = order_desc(col);
    int64_t tp = 0, fp = 0;
    double best = -1;
    // Candidate thresholds are the distinct scores, from the highest down.
    for (int64_t i = 0; i < in.n;) {
      int64_t j = i;
      while (j < in.n && col[idx[j]] == col[idx[i]]) {
        (tcol[idx[j]] > 0.5 ? tp : fp) += 1;
        ++j;
      }
      const double f1 = 2.0 * tp / static_cast<double>(tp + fp + npos);
      if (f1 > best) best = f1, out[l] = col[idx[i]];
      i = j;
    }
  }
  return out;
}

MultiLabelMetrics multi_label_metrics(const at::Tensor& scores, const at::Tensor& targets,
                                      const std::vector<double>& thresholds) {
  return multi_label_on(multi_label_input(scores, targets), thresholds, {});
}

Interval bootstrap_ci(int64_t n, const std::function<double(const std::vector<int64_t>&)>& metric,
                      const BootstrapOptions& options) {
  RETCLIP_CHECK(n > 0, "bootstrap needs at least one row");
  auto all = bootstrap_all(
      n,
      [&](const std::vector<int64_t>& rows) {
        return std::map<std::string, double>{{"m", metric(rows)}};
      },
      options);
  auto it = all.find("m");
  return it == all.end() ? Interval{kNaN, kNaN, 0} : it->second;
}

std::map<std::string, Interval> single_label_bootstrap(const at::Tensor& scores,
                                                       const at::Tensor& labels,
                                                       const BootstrapOptions& options) {
  SingleLabelInput in = single_label_input(scores, labels);
  return bootstrap_all(
      in.n, [&](const std::vector<int64_t>& rows) { return single_label_on(in, rows).scalars(); },
      options);
}

std::map<std::string, Interval> multi_label_bootstrap(const at::Tensor& scores,
                                                      const at::Tensor& targets,
                                                      const std::vector<double>& thresholds,
                                                      const BootstrapOptions& options) {
  MultiLabelInput in = multi_label_input(scores, targets);
  RETCLIP_CHECK(in.n > 0, "bootstrap needs at least one row");
  return bootstrap_all(
      in.n,
      [&](const std::vector<int64_t>& rows) {
        return multi_label_on(in, thresholds, rows).scalars();
      },
      options);
}

nlohmann::json to_json(const SingleLabelMetrics& m, const std::vector<std::string>& names) {
  nlohmann::json j;
  j["n"] = m.n;
  for (const auto& [k, v] : m.scalars()) j[k] = num_or_null(v);
  j["auroc"] = vec_json(m.auroc, names);
  j["aupr"] = vec_json(m.aupr, names);
  j["f1"] = vec_json(m.f1, names);
  j["sensitivity"] = vec_json(m.sensitivity, names);
  j["specificity"] = vec_json(m.specificity, names);
  nlohmann::json cm = nlohmann::json::array();
  for (int64_t t = 0; t < m.classes; ++t) {
    nlohmann::json row = nlohmann::json::array();
    for (int64_t p = 0; p < m.classes; ++p) row.push_back(m.confusion.at(t, p));
    cm.push_back(row);
  }
  j["confusion_matrix"] = cm;  // rows: true class, columns: predicted class
  return j;
}

nlohmann::json to_json(const MultiLabelMetrics& m, const std::vector<std::string>& names) {
  nlohmann::json j;
  j["n"] = m.n;
  for (const auto& [k, v] : m.scalars()) j[k] = num_or_null(v);
  j["auroc"] = vec_json(m.auroc, names);
  j["aupr"] = vec_json(m.aupr, names);
  j["f1"] = vec_json(m.f1, names);
  j["threshold"] = vec_json(m.threshold, names);
  return j;
}

nlohmann::json to_json(const std::map<std::string, Interval>& cis) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : cis)
    j[k] = {{"lo", num_or_null(v.lo)}, {"hi", num_or_null(v.hi)}, {"rounds", v.rounds}};
  return j;
}

}  // namespace retclip::eval
