// AdamW parameter groups (reference no-decay rule + optim.no_decay), learning-rate
// setters, optimizer-state archives and gradient-norm helpers.
#include "retclip/train/optimizer.hpp"

#include <fmt/format.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <sstream>

#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace retclip::train {

const std::vector<std::string>& reference_no_decay_patterns() {
  static const std::vector<std::string> kPatterns{"bn", "ln", "bias", "logit_scale"};
  return kPatterns;
}

bool is_no_decay(const std::string& name, const torch::Tensor& param,
                 const std::vector<std::string>& extra_patterns) {
  if (param.dim() < 2) return true;
  for (const auto& p : reference_no_decay_patterns())
    if (name.find(p) != std::string::npos) return true;
  for (const auto& p : extra_patterns)
    if (!p.empty() && name.find(p) != std::string::npos) return true;
  return false;
}

namespace {

std::string human_count(int64_t n) {
  if (n >= 1000000000) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1000000) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1000) return fmt::format("{:.1f}K", n / 1e3);
  return fmt::format("{}", n);
}

}  // namespace

std::string OptimizerSummary::to_string() const {
  std::string s = "AdamW:";
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    s += fmt::format("{} {} {} tensors / {} params (weight decay {:g})", i ? "," : "", g.name,
                     g.tensors, human_count(g.numel), g.weight_decay);
  }
  s += fmt::format(", frozen {} tensors / {} params", frozen_tensors, human_count(frozen_numel));
  return s;
}

BuiltOptimizer build_adamw(const torch::nn::Module& module, const config::OptimConfig& cfg) {
  std::vector<torch::Tensor> decay, no_decay;
  ParamGroupSummary sd{"decay", cfg.weight_decay, 0, 0, {}};
  ParamGroupSummary sn{"no_decay", 0.0, 0, 0, {}};
  OptimizerSummary summary;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const auto& p = item.value();
    if (!p.requires_grad()) {
      summary.frozen_tensors += 1;
      summary.frozen_numel += p.numel();
      continue;
    }
    const bool nd = is_no_decay(item.key(), p, cfg.no_decay);
    auto& group = nd ? sn : sd;
    (nd ? no_decay : decay).push_back(p);
    group.tensors += 1;
    group.numel += p.numel();
    group.names.push_back(item.key());
  }
  RETCLIP_CHECK_USAGE(!decay.empty() || !no_decay.empty(),
                      "expected at least one trainable parameter but all ",
                      summary.frozen_tensors,
                      " are frozen. HINT: check train.freeze (vision and text both frozen?)");

  auto options = [&](double wd) {
    torch::optim::AdamWOptions o(cfg.lr);
    o.betas(std::make_tuple(cfg.betas[0], cfg.betas[1])).eps(cfg.eps).weight_decay(wd);
    return o;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) {
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                   options(cfg.weight_decay)));
    summary.groups.push_back(std::move(sd));
  }
  if (!no_decay.empty()) {
    groups.emplace_back(no_decay,
                        std::make_unique<torch::optim::AdamWOptions>(options(0.0)));
    summary.groups.push_back(std::move(sn));
  }
  BuiltOptimizer out;
  out.optimizer = std::make_unique<torch::optim::AdamW>(groups, options(cfg.weight_decay));
  out.summary = std::move(summary);
  return out;
}

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& g : optimizer.param_groups()) g.options().set_lr(lr);
}

double get_lr(const torch::optim::Optimizer& optimizer) {
  const auto& groups = optimizer.param_groups();
  return groups.empty() ? 0.0 : groups.front().options().get_lr();
}

std::vector<torch::Tensor> optimizer_params(const torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> out;
  for (const auto& g : optimizer.param_groups())
    out.insert(out.end(), g.params().begin(), g.params().end());
  return out;
}

std::string save_optimizer_state(const torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream os;
  archive.save_to(os);
  return os.str();
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& bytes,
                          const std::string& origin) {
  try {
    torch::serialize::InputArchive archive;
    std::istringstream is(bytes);
    archive.load_from(is);
    optimizer.load(archive);
  } catch (const c10::Error& e) {
    throw Error(str_cat("cannot load optimizer state from ", origin, ": ",
                        e.what_without_backtrace(),
                        ". HINT: the optimizer must be built over the same model and the "
                        "same train.freeze settings as the run that saved it"));
  }
}

void save_optimizer_state(const torch::optim::Optimizer& optimizer,
                          const std::filesystem::path& path) {
  util::write_file_atomic(path, save_optimizer_state(optimizer));
}

void load_optimizer_state_file(torch::optim::Optimizer& optimizer,
                               const std::filesystem::path& path) {
  load_optimizer_state(optimizer, util::read_file(path), path.string());
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> with_grad;
  for (const auto& p : params)
    if (p.grad().defined()) with_grad.push_back(p);
  if (with_grad.empty()) return 0.0;
  if (max_norm > 0) return torch::nn::utils::clip_grad_norm_(with_grad, max_norm, 2.0);
  std::vector<torch::Tensor> norms;
  norms.reserve(with_grad.size());
  for (const auto& p : with_grad) norms.push_back(p.grad().detach().norm(2));  // as clip_grad_norm_ computes it
  return torch::stack(norms).norm(2).item<double>();
}

bool grads_finite(const std::vector<torch::Tensor>& params) {
  torch::Tensor all;
  for (const auto& p : params) {
    const auto& g = p.grad();
    if (!g.defined()) continue;
    auto ok = torch::isfinite(g.detach()).all();
    all = all.defined() ? torch::logical_and(all, ok.to(all.device())) : ok;
  }
  return !all.defined() || all.item<bool>();
}

}  // namespace retclip::train
