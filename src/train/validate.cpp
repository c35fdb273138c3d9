// Validation over a whole split.
#include "retclip/train/validate.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace retclip::train {

std::map<std::string, double> EvalResult::metrics() const {
  std::map<std::string, double> m{{"val/loss", loss}};
  for (model::Level l : model::kLevels) {
    const std::string name = model::level_name(l);
    m["val/loss_" + name] = level_loss[l];
    m["val/acc_" + name + "_i2t"] = acc_i2t[l];
    m["val/acc_" + name + "_t2i"] = acc_t2i[l];
    for (const auto& [k, v] : recall[l].i2t) m[fmt::format("val/{}_i2t_r@{}", name, k)] = v;
    for (const auto& [k, v] : recall[l].t2i) m[fmt::format("val/{}_t2i_r@{}", name, k)] = v;
  }
  return m;
}

std::string EvalResult::to_string() const {
  using model::Level;
  std::string s = fmt::format(
      "{} held-out patients; loss {:.4f} (patient {:.4f}, left {:.4f}, right {:.4f})\n", patients,
      loss, level_loss[Level::kPatient], level_loss[Level::kLeft], level_loss[Level::kRight]);
  s += fmt::format("  {:<8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "level", "pairs", "i2t R@1",
                   "i2t R@5", "t2i R@1", "t2i R@5", "chance@5");
  for (model::Level l : model::kLevels) {
    const eval::RecallResult& r = recall[l];
    if (r.n == 0) continue;
    s += fmt::format("  {:<8} {:>6} {:>8.1f}% {:>8.1f}% {:>8.1f}% {:>8.1f}% {:>8.1f}%\n",
                     model::level_name(l), r.n, 100 * r.i2t.at(1), 100 * r.i2t.at(5),
                     100 * r.t2i.at(1), 100 * r.t2i.at(5), 100 * r.chance.at(5));
  }
  return s;
}

namespace {

// One group id per row of tokens [N, T]: equal rows, equal ids.
std::vector<int64_t> report_groups(const at::Tensor& tokens) {
  const at::Tensor t = tokens.to(at::kLong).contiguous();
  const int64_t n = t.size(0), width = t.size(1);
  std::vector<std::string> rows(static_cast<size_t>(n));
  const char* p = reinterpret_cast<const char*>(t.data_ptr<int64_t>());
  const size_t bytes = static_cast<size_t>(width) * sizeof(int64_t);
  for (int64_t i = 0; i < n; ++i) rows[static_cast<size_t>(i)].assign(p + i * bytes, bytes);
  return eval::group_texts(rows);
}

}  // namespace

EvalResult evaluate(model::RetClip& net, const BatchSource& next, int64_t limit,
                    const loss::TripartiteLossOptions& options, Precision precision) {
  const bool was_training = net->is_training();
  net->eval();
  torch::NoGradGuard no_grad;
  EvalResult r;
  model::PerLevel<std::vector<at::Tensor>> img, txt;
  std::vector<at::Tensor> has_left, has_right, tokens;
  int64_t batches = 0, seen = 0;
  MicroBatch mb;
  while (seen < limit && next(&mb)) {
    int64_t take = std::min<int64_t>(mb.size(), limit - seen);
    if (take < mb.size()) {
      mb = {mb.left.slice(0, 0, take), mb.right.slice(0, 0, take), mb.tokens.slice(0, 0, take),
            mb.has_left.slice(0, 0, take), mb.has_right.slice(0, 0, take)};
    }
    seen += take;
    model::Embeddings e = forward_no_grad(net, mb, precision);
    loss::LossOutput o = loss::tripartite_loss(e, options);
    r.loss += o.total.item<double>();
    for (model::Level l : model::kLevels) {
      r.level_loss[l] += o.level[l].loss.item<double>();
      r.acc_i2t[l] += o.level[l].acc_i2t;
      r.acc_t2i[l] += o.level[l].acc_t2i;
      img[l].push_back(e.img[l].to(at::kCPU));
      txt[l].push_back(e.txt[l].to(at::kCPU));
    }
    tokens.push_back(mb.tokens.to(at::kCPU));
    has_left.push_back(e.has_left.to(at::kCPU));
    has_right.push_back(e.has_right.to(at::kCPU));
    ++batches;
  }
  if (was_training) net->train();
  if (batches == 0) return r;
  const double nb = static_cast<double>(batches);
  r.loss /= nb;
  for (model::Level l : model::kLevels)
    for (double* v : {&r.level_loss[l], &r.acc_i2t[l], &r.acc_t2i[l]}) *v /= nb;
  r.patients = seen;
  const std::vector<int64_t> ks{1, 5, 10};
  // Patients whose token rows are identical share one report: recall counts it once,
  // whatever the model makes of the text (eval/retrieval.hpp).
  const std::vector<int64_t> report = report_groups(at::cat(tokens));
  model::PerLevel<at::Tensor> rows;  // the rows that take part at each level
  rows[model::Level::kLeft] = at::cat(has_left).to(at::kBool);
  rows[model::Level::kRight] = at::cat(has_right).to(at::kBool);
  for (model::Level l : model::kLevels) {
    at::Tensor i = at::cat(img[l]), t = at::cat(txt[l]);
    std::vector<int64_t> groups = report;
    if (rows[l].defined()) {
      if (!rows[l].any().item<bool>()) continue;
      i = i.index({rows[l]});
      t = t.index({rows[l]});
      groups.clear();
      const at::Tensor keep = rows[l].contiguous();
      for (int64_t k = 0; k < keep.numel(); ++k)
        if (keep.data_ptr<bool>()[k]) groups.push_back(report[static_cast<size_t>(k)]);
    }
    r.recall[l] = eval::retrieval_recall(i, t, ks, groups);
  }
  return r;
}

}  // namespace retclip::train
