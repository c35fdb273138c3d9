// Logistic-regression probe: full-batch L-BFGS in float64 on the features' device, a
// sweep over C scored on validation, and K-shot draws over seeds.
#include "retclip/eval/probe.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <unordered_map>

#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"

namespace retclip::eval {

namespace {

int64_t infer_classes(const at::Tensor& y, bool multi_label) {
  return multi_label ? y.size(1) : y.max().item<int64_t>() + 1;
}

// Per-row weights [N] (single-label) or per-entry weights [N,L] (multi-label).
at::Tensor sample_weights(const at::Tensor& y, bool multi_label, int64_t classes, bool balanced,
                          const at::TensorOptions& o) {
  const int64_t n = y.size(0);
  if (!balanced) return multi_label ? torch::ones({n, classes}, o) : torch::ones({n}, o);
  if (multi_label) {
    // One binary problem per label: n / (2 n_pos) for positives, n / (2 n_neg) for negatives.
    at::Tensor t = y.to(o);
    at::Tensor pos = t.sum(0).clamp_min(1), neg = (1 - t).sum(0).clamp_min(1);
    return t * (n / (2 * pos)) + (1 - t) * (n / (2 * neg));
  }
  at::Tensor counts = torch::bincount(y.to(torch::kCPU), {}, classes).to(o).clamp_min(1);
  // Weights of classes present in y (as scikit-learn's compute_class_weight).
  const double present = (torch::bincount(y.to(torch::kCPU), {}, classes) > 0).sum().item<double>();
  at::Tensor w = static_cast<double>(n) / (present * counts);
  return w.index_select(0, y.to(w.device()));
}

std::map<std::string, double> scalars_of(const at::Tensor& probs, const at::Tensor& y,
                                         bool multi_label, std::vector<double>* thresholds) {
  if (!multi_label) return single_label_metrics(probs, y).scalars();
  return multi_label_metrics(probs, y, *thresholds).scalars();
}

}  // namespace

at::Tensor LogisticModel::predict_proba(const at::Tensor& x) const {
  torch::NoGradGuard ng;
  at::Tensor logits = torch::addmm(bias, x.to(weight.device(), weight.scalar_type()), weight.t());
  if (multi_label) return torch::sigmoid(logits);
  if (weight.size(0) == 1) {
    at::Tensor p = torch::sigmoid(logits);
    return torch::cat({1 - p, p}, 1);
  }
  return torch::softmax(logits, 1);
}

LogisticModel fit_logistic(const at::Tensor& x_in, const at::Tensor& y_in, double c,
                           bool multi_label, int64_t classes, bool balanced, int64_t max_iter) {
  RETCLIP_CHECK(x_in.dim() == 2 && x_in.size(0) == y_in.size(0) && x_in.size(0) > 0,
                "fit_logistic expects x [N,D] and y with N rows but got ", x_in.sizes(), " and ",
                y_in.sizes());
  RETCLIP_CHECK(c > 0, "the probe's C must be positive but got ", c);
  torch::NoGradGuard outer;
  const auto o = x_in.options().dtype(torch::kDouble);
  at::Tensor x = x_in.to(o);
  const int64_t n = x.size(0), d = x.size(1);
  const bool binary = !multi_label && classes == 2;
  const int64_t out = binary ? 1 : classes;
  at::Tensor target = multi_label ? y_in.to(o)
                      : binary    ? y_in.to(o).unsqueeze(1)
                                  : y_in.to(x.device(), torch::kLong);
  at::Tensor w = sample_weights(y_in.to(x.device()), multi_label, classes, balanced, o);
  if (binary) w = w.unsqueeze(1);
  at::Tensor weight = torch::zeros({out, d}, o).requires_grad_(true);
  at::Tensor bias = torch::zeros({out}, o).requires_grad_(true);
  // scikit-learn's objective divided by C*N (same minimiser, better scaled).
  const double l2 = 1.0 / (2.0 * c * static_cast<double>(n));
  torch::optim::LBFGS opt({weight, bias}, torch::optim::LBFGSOptions(1.0)
                                              .max_iter(max_iter)
                                              .max_eval(max_iter * 5 / 4)
                                              .tolerance_grad(1e-10)
                                              .tolerance_change(1e-14)
                                              .history_size(20)
                                              .line_search_fn("strong_wolfe"));
  auto closure = [&]() -> at::Tensor {
    torch::AutoGradMode grad(true);
    opt.zero_grad();
    at::Tensor logits = torch::addmm(bias, x, weight.t());
    at::Tensor per;
    if (multi_label || binary)
      per =
          torch::binary_cross_entropy_with_logits(logits, target, {}, {}, at::Reduction::None) * w;
    else
      per = torch::nll_loss(torch::log_softmax(logits, 1), target, {}, at::Reduction::None) * w;
    at::Tensor loss = per.sum() / static_cast<double>(n) + l2 * weight.pow(2).sum();
    loss.backward();
    return loss;
  };
  opt.step(closure);
  LogisticModel m;
  m.weight = weight.detach();
  m.bias = bias.detach();
  m.multi_label = multi_label;
  m.classes = classes;
  return m;
}

std::vector<int64_t> draw_shots(const at::Tensor& y, bool multi_label, int64_t classes,
                                int64_t shots, uint64_t seed) {
  at::Tensor yc = y.to(torch::kCPU);
  std::mt19937_64 rng(seed);
  std::vector<int64_t> picked;
  for (int64_t c = 0; c < classes; ++c) {
    at::Tensor mask = multi_label ? yc.select(1, c) > 0.5 : yc == c;
    at::Tensor idx = mask.nonzero().flatten().contiguous();
    std::vector<int64_t> rows(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
    std::shuffle(rows.begin(), rows.end(), rng);
    rows.resize(std::min<size_t>(rows.size(), static_cast<size_t>(shots)));
    picked.insert(picked.end(), rows.begin(), rows.end());
  }
  std::sort(picked.begin(), picked.end());
  picked.erase(std::unique(picked.begin(), picked.end()), picked.end());
  return picked;
}

ProbeResult run_probe(const ProbeData& d, const ProbeOptions& o) {
  for (const auto* t : {&d.train_x, &d.val_x, &d.test_x})
    RETCLIP_CHECK_USAGE(t->defined() && t->size(0) > 0,
                        "the probe needs train, val and test rows but one split is empty. HINT: "
                        "check the split column, or --val-fraction / --test-fraction");
  RETCLIP_CHECK_USAGE(!o.c_grid.empty(), "the probe's C grid is empty. HINT: --c-grid 0.01,0.1,1");
  RETCLIP_CHECK_USAGE(o.seeds >= 1, "--seeds must be at least 1 but got ", o.seeds);
  const int64_t classes = d.classes > 0 ? d.classes : infer_classes(d.train_y, d.multi_label);
  ProbeResult res;
  const int64_t seeds = o.shots > 0 ? o.seeds : 1;  // the full-train fit is deterministic
  for (int64_t s = 0; s < seeds; ++s) {
    ProbeRun run;
    run.seed = o.seed + static_cast<uint64_t>(s);
    at::Tensor tx = d.train_x, ty = d.train_y;
    if (o.shots > 0) {
      run.train_rows_used = draw_shots(d.train_y, d.multi_label, classes, o.shots, run.seed);
      at::Tensor idx = torch::tensor(run.train_rows_used, torch::kLong);
      tx = d.train_x.index_select(0, idx.to(d.train_x.device()));
      ty = d.train_y.index_select(0, idx.to(d.train_y.device()));
    }
    run.train_rows = tx.size(0);
    // Selection: every C is fitted on train and scored on validation only.
    double best = -std::numeric_limits<double>::infinity();
    LogisticModel chosen;
    std::vector<double> half(classes, 0.5);
    for (double c : o.c_grid) {
      LogisticModel m = fit_logistic(tx, ty, c, d.multi_label, classes, o.balanced, o.max_iter);
      at::Tensor vp = m.predict_proba(d.val_x).cpu();
      std::vector<double> th = d.multi_label ? tune_f1_thresholds(vp, d.val_y.cpu()) : half;
      auto sc = scalars_of(vp, d.val_y.cpu(), d.multi_label, &th);
      RETCLIP_CHECK_USAGE(sc.count(o.select), "unknown probe selection metric '", o.select,
                          "'. HINT: --select auroc_macro | aupr_macro | f1_macro | accuracy");
      double v = sc.at(o.select);
      if (!std::isfinite(v)) v = -1;  // e.g. a validation split with one class
      run.val_by_c[c] = v;
      if (v > best) best = v, chosen = m, run.chosen_c = c, run.thresholds = th;
    }
    // The test split: scored once, with the chosen model.
    run.test_scores = chosen.predict_proba(d.test_x).cpu();
    at::Tensor ty_test = d.test_y.cpu();
    run.test = scalars_of(run.test_scores, ty_test, d.multi_label, &run.thresholds);
    if (s == 0) {
      if (d.multi_label)
        res.multi = multi_label_metrics(run.test_scores, ty_test, run.thresholds);
      else
        res.single = single_label_metrics(run.test_scores, ty_test);
      if (o.bootstrap.rounds > 0)
        res.test_ci = d.multi_label ? multi_label_bootstrap(run.test_scores, ty_test,
                                                            run.thresholds, o.bootstrap)
                                    : single_label_bootstrap(run.test_scores, ty_test, o.bootstrap);
    }
    res.runs.push_back(std::move(run));
  }
  for (const auto& [k, v] : res.runs[0].test) {
    std::vector<double> xs;
    for (const auto& r : res.runs) xs.push_back(r.test.at(k));
    double mean = finite_mean(xs), var = 0;
    int64_t m = 0;
    for (double x : xs)
      if (std::isfinite(x)) var += (x - mean) * (x - mean), ++m;
    res.test_mean[k] = mean;
    res.test_std[k] = m ? std::sqrt(var / static_cast<double>(m)) : std::nan("");
  }
  return res;
}

namespace {

std::string fnv_hex(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

nlohmann::json finite_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

LabelledProbe probe_features(const data::LabelledSet& set, const Features& f,
                             const ProbeOptions& o) {
  std::unordered_map<std::string, int64_t> row_of;
  for (size_t i = 0; i < f.ids.size(); ++i) row_of[f.ids[i]] = static_cast<int64_t>(i);
  const int64_t classes = static_cast<int64_t>(set.classes.size());
  ProbeData d;
  d.multi_label = set.multi_label;
  d.classes = classes;
  std::map<std::string, std::vector<int64_t>> items_of;  // split -> item indices with features
  int64_t unmatched = 0;
  for (const char* split : {"train", "val", "test"}) {
    std::vector<int64_t> rows, items;
    for (int64_t i : set.indices(split)) {
      auto it = row_of.find(set.items[i].id);
      if (it == row_of.end()) {
        ++unmatched;
        continue;
      }
      rows.push_back(it->second);
      items.push_back(i);
    }
    RETCLIP_CHECK_USAGE(!set.indices(split).empty(), "the probe needs train, val and test items, "
                        "but ", set.source, " has ", data::split_counts(set), " at ", config::name(set.level),
                        " level. HINT: --ignore-split with --test-fraction 0.3 draws every "
                        "split from all rows");
    RETCLIP_CHECK_USAGE(
        !rows.empty(), "none of the ", set.indices(split).size(), " ", split, " items of ",
        set.source, " (", config::name(set.level), " level, e.g. '", set.items[set.indices(split)[0]].id,
        "') has a row in the features (", f.ids.size(), " ids at ",
        f.level.empty() ? std::string("unrecorded") : f.level, " level",
        f.ids.empty() ? std::string() : ", e.g. '" + f.ids[0] + "'",
        "). HINT: extract the features from the same labelled set (retclip features --data ",
        set.source, " --level ", config::name(set.level), ")");
    at::Tensor x = f.x.index_select(0, torch::tensor(rows, torch::kLong));
    at::Tensor y;
    if (set.multi_label) {
      std::vector<at::Tensor> t;
      for (int64_t i : items) t.push_back(torch::tensor(set.items[i].target, torch::kFloat));
      y = torch::stack(t).to(torch::kDouble);
    } else {
      std::vector<int64_t> l;
      for (int64_t i : items) l.push_back(set.items[i].label);
      y = torch::tensor(l, torch::kLong);
    }
    items_of[split] = items;
    if (std::string(split) == "train")
      d.train_x = x, d.train_y = y;
    else if (std::string(split) == "val")
      d.val_x = x, d.val_y = y;
    else
      d.test_x = x, d.test_y = y;
  }
  if (unmatched)
    log::warn("probe: {} labelled item(s) have no feature and are left out", unmatched);

  LabelledProbe out;
  out.result = run_probe(d, o);
  const ProbeResult& r = out.result;
  nlohmann::json j;
  std::ostringstream cfg;
  cfg << "c_grid";
  for (double c : o.c_grid) cfg << ' ' << c;
  cfg << " balanced " << o.balanced << " shots " << o.shots << " seeds " << o.seeds << " seed "
      << o.seed << " max_iter " << o.max_iter << " select " << o.select << " level " << f.level
      << " feature " << f.feature << " mapping " << f.mapping;
  j["protocol"] = o.shots > 0 ? fmt::format("{}-shot linear probe", o.shots) : "linear probe";
  j["task"] = set.multi_label ? "multi-label" : "single-label";
  j["level"] = config::name(set.level);
  j["feature"] = f.feature;
  j["classes"] = set.classes;
  j["config"] = cfg.str();
  j["config_hash"] = fnv_hex(cfg.str());
  for (const char* split : {"train", "val", "test"}) {
    j["splits"][split] = {{"n", items_of[split].size()}, {"ids_hash", set.split_hash(split)}};
  }
  j["splits"]["val_drawn"] = set.val_drawn;
  j["splits"]["test_drawn"] = set.test_drawn;
  j["splits"]["seed"] = set.split_seed;
  j["c_grid"] = o.c_grid;
  j["balanced"] = o.balanced;
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& run : r.runs) {
    nlohmann::json rj;
    rj["seed"] = run.seed;
    rj["train_rows"] = run.train_rows;
    rj["chosen_c"] = run.chosen_c;
    for (const auto& [c, v] : run.val_by_c)
      rj["val_" + o.select + "_by_c"][fmt::format("{:g}", c)] = v;
    for (const auto& [k, v] : run.test) rj["test"][k] = finite_or_null(v);
    runs.push_back(rj);
  }
  j["runs"] = runs;
  for (const auto& [k, v] : r.test_mean)
    j["test"][k] = {{"mean", finite_or_null(v)}, {"std", finite_or_null(r.test_std.at(k))}};
  j["test_detail"] =
      set.multi_label ? to_json(r.multi, set.classes) : to_json(r.single, set.classes);
  if (!r.test_ci.empty()) j["test_ci95"] = to_json(r.test_ci);
  j["test_scored_once_per_run"] = true;
  out.json = j.dump(2);

  // Predictions of the first run on the test split.
  std::ostringstream csv;
  csv << "id,split";
  if (!set.multi_label) csv << ",truth,pred";
  for (const auto& c : set.classes) csv << ",p_" << c;
  if (set.multi_label)
    for (const auto& c : set.classes) csv << ",y_" << c;
  csv << "\n";
  const at::Tensor p = r.runs[0].test_scores.to(torch::kDouble).contiguous();
  auto pa = p.accessor<double, 2>();
  const auto& test_items = items_of["test"];
  for (size_t i = 0; i < test_items.size(); ++i) {
    const auto& it = set.items[test_items[i]];
    csv << '"' << it.id << "\",test";
    if (!set.multi_label) {
      int64_t best = 0;
      for (int64_t c = 1; c < classes; ++c)
        if (pa[i][c] > pa[i][best]) best = c;
      csv << ',' << set.classes[it.label] << ',' << set.classes[best];
    }
    for (int64_t c = 0; c < classes; ++c) csv << ',' << fmt::format("{:.6g}", pa[i][c]);
    if (set.multi_label)
      for (int64_t c = 0; c < classes; ++c) csv << ',' << static_cast<int>(it.target[c]);
    csv << "\n";
  }
  out.predictions_csv = csv.str();

  std::string s = fmt::format("{} ({}, {} level, {} features; train {}, val {}, test {}):\n",
                              j["protocol"].get<std::string>(), j["task"].get<std::string>(),
                              config::name(set.level), f.feature, items_of["train"].size(),
                              items_of["val"].size(), items_of["test"].size());
  for (const auto& [k, v] : r.test_mean) {
    s += fmt::format("  test {:<18} {:.4f}", k, v);
    if (r.runs.size() > 1)
      s += fmt::format(" +- {:.4f} over {} seeds", r.test_std.at(k), r.runs.size());
    auto ci = r.test_ci.find(k);
    if (ci != r.test_ci.end())
      s += fmt::format("  (95% CI {:.4f}-{:.4f})", ci->second.lo, ci->second.hi);
    s += "\n";
  }
  s += fmt::format("  chosen C {:g} (on validation {})\n", r.runs[0].chosen_c, o.select);
  out.summary = s;
  return out;
}

LabelledProbe run_probe(Encoder& encoder, const data::LabelledSet& set, const FeatureOptions& fo,
                        const ProbeOptions& o) {
  FeatureOptions opts = fo;
  opts.level = set.level;
  Features f = extract_features(encoder, set.items, opts);
  return probe_features(set, f, o);
}

ProbeSetup probe_setup(const config::Config& cfg) {
  const auto& p = cfg.eval.probe;
  data::LabelOptions lo;
  lo.path = p.data;
  lo.level = p.level;
  lo.classes = p.classes;
  lo.val_fraction = p.val_fraction;
  lo.test_fraction = p.test_fraction;
  lo.seed = p.split_seed;
  lo.ignore_split = p.ignore_split;
  lo.policy = cfg.data.on_bad_sample;
  lo.option_section = "eval.probe";
  ProbeSetup s;
  s.set = data::read_labelled(lo);
  data::require_splits(s.set, lo, {"train", "val", "test"}, "eval.probe");
  s.features.level = s.set.level;
  s.features.feature = p.feature;
  s.features.batch_size = cfg.train.batch_size;
  s.features.workers = cfg.data.workers;
  s.features.device = cfg.train.device;
  s.features.policy = lo.policy;
  s.probe.shots = p.shots;
  s.probe.balanced = p.balanced;
  s.probe.bootstrap.rounds = 0;  // a number per step, not an interval
  return s;
}

std::map<std::string, double> probe_during_training(model::RetClip& net, const config::Config& cfg,
                                                    const ProbeSetup& setup) {
  const bool was_training = net->is_training();
  Encoder enc;
  enc.net = net;
  enc.cfg = cfg;
  enc.source = "training";
  LabelledProbe p = run_probe(enc, setup.set, setup.features, setup.probe);
  net->train(was_training);
  std::map<std::string, double> out;
  for (const auto& [k, v] : p.result.test_mean) out["probe/" + k] = v;
  const ProbeRun& first = p.result.runs[0];
  out["probe/chosen_c"] = first.chosen_c;
  // The validation value that chose C: what checkpoints should be picked on (the test
  // split is scored, never selected on).
  out["probe/val_" + setup.probe.select] = first.val_by_c.at(first.chosen_c);
  return out;
}

}  // namespace retclip::eval
