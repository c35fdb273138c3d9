// Validation over a whole split.
#include "retclip/train/evaluate.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

namespace retclip::train {

std::map<std::string, double> EvalResult::metrics() const {
  std::map<std::string, double> m{
      {"val/loss", loss},           {"val/loss_patient", loss_patient},
      {"val/loss_left", loss_left}, {"val/loss_right", loss_right},
      {"val/acc_patient_i2t", acc_patient_i2t}, {"val/acc_patient_t2i", acc_patient_t2i},
      {"val/acc_left_i2t", acc_left_i2t},       {"val/acc_left_t2i", acc_left_t2i},
      {"val/acc_right_i2t", acc_right_i2t},     {"val/acc_right_t2i", acc_right_t2i}};
  for (const auto& [name, r] : {std::pair<std::string, const eval::RecallResult*>{"patient", &recall_patient},
                                {"left", &recall_left}, {"right", &recall_right}}) {
    for (const auto& [k, v] : r->i2t) m[fmt::format("val/{}_i2t_r@{}", name, k)] = v;
    for (const auto& [k, v] : r->t2i) m[fmt::format("val/{}_t2i_r@{}", name, k)] = v;
  }
  return m;
}

std::string EvalResult::to_string() const {
  std::string s = fmt::format("{} held-out patients; loss {:.4f} (patient {:.4f}, left {:.4f}, right {:.4f})\n",
                              patients, loss, loss_patient, loss_left, loss_right);
  s += fmt::format("  {:<8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "level", "pairs", "i2t R@1",
                   "i2t R@5", "t2i R@1", "t2i R@5", "chance@5");
  for (const auto& [name, r] : {std::pair<const char*, const eval::RecallResult*>{"patient", &recall_patient},
                                {"left", &recall_left}, {"right", &recall_right}}) {
    if (r->n == 0) continue;
    s += fmt::format("  {:<8} {:>6} {:>8.1f}% {:>8.1f}% {:>8.1f}% {:>8.1f}% {:>8.1f}%\n", name, r->n,
                     100 * r->i2t.at(1), 100 * r->i2t.at(5), 100 * r->t2i.at(1),
                     100 * r->t2i.at(5), 100 * r->chance.at(5));
  }
  return s;
}

EvalResult evaluate(model::RetClip& net, const BatchSource& next, int64_t limit,
                    const loss::TripartiteLossOptions& options, Precision precision) {
  const bool was_training = net->is_training();
  net->eval();
  torch::NoGradGuard no_grad;
  EvalResult r;
  std::vector<at::Tensor> pi, pt, li, lt, ri, rt, hl, hr;
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
    r.loss_patient += o.patient.item<double>();
    r.loss_left += o.left.item<double>();
    r.loss_right += o.right.item<double>();
    r.acc_patient_i2t += o.acc_patient_i2t;
    r.acc_patient_t2i += o.acc_patient_t2i;
    r.acc_left_i2t += o.acc_left_i2t;
    r.acc_left_t2i += o.acc_left_t2i;
    r.acc_right_i2t += o.acc_right_i2t;
    r.acc_right_t2i += o.acc_right_t2i;
    ++batches;
    for (auto [dst, src] : {std::pair{&pi, &e.patient_img}, {&pt, &e.patient_txt}, {&li, &e.left_img},
                            {&lt, &e.left_txt}, {&ri, &e.right_img}, {&rt, &e.right_txt},
                            {&hl, &e.has_left}, {&hr, &e.has_right}})
      dst->push_back(src->to(at::kCPU));
  }
  if (was_training) net->train();
  if (batches == 0) return r;
  const double nb = static_cast<double>(batches);
  for (double* v : {&r.loss, &r.loss_patient, &r.loss_left, &r.loss_right, &r.acc_patient_i2t,
                    &r.acc_patient_t2i, &r.acc_left_i2t, &r.acc_left_t2i, &r.acc_right_i2t,
                    &r.acc_right_t2i})
    *v /= nb;
  r.patients = seen;
  const std::vector<int64_t> ks{1, 5, 10};
  r.recall_patient = eval::retrieval_recall(at::cat(pi), at::cat(pt), ks);
  at::Tensor ml = at::cat(hl).to(at::kBool), mr = at::cat(hr).to(at::kBool);
  if (ml.any().item<bool>())
    r.recall_left = eval::retrieval_recall(at::cat(li).index({ml}), at::cat(lt).index({ml}), ks);
  if (mr.any().item<bool>())
    r.recall_right = eval::retrieval_recall(at::cat(ri).index({mr}), at::cat(rt).index({mr}), ks);
  return r;
}

}  // namespace retclip::train
