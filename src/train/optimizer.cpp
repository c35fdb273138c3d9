// AdamW parameter groups (reference no-decay rule + optim.no_decay), learning-rate
// setters, optimizer-state archives and gradient-norm helpers.
#include "retclip/train/optimizer.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <utility>

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

namespace {

using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;

/// LibTorch's AdamW::step for one parameter (torch 2.11 adamw.cpp), for the
/// parameters the fused kernel does not take.
void adamw_update(const at::Tensor& p, const at::Tensor& grad, AdamWParamState& state,
                  const AdamWOptions& o) {
  if (o.weight_decay() != 0) p.mul_(1 - o.lr() * o.weight_decay());
  auto& exp_avg = state.exp_avg();
  auto& exp_avg_sq = state.exp_avg_sq();
  const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
  const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
  const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
  exp_avg.mul_(beta1).add_(grad, 1 - beta1);
  exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
  at::Tensor denom;
  if (o.amsgrad()) {
    state.max_exp_avg_sq(at::max(state.max_exp_avg_sq(), exp_avg_sq));
    denom = (state.max_exp_avg_sq().sqrt() / std::sqrt(bias_correction2)).add_(o.eps());
  } else {
    denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(o.eps());
  }
  p.addcdiv_(exp_avg, denom, -o.lr() / bias_correction1);
}

bool fusable(const at::Tensor& p, const at::Tensor& grad, const AdamWParamState& state,
             bool amsgrad) {
  const auto dev = p.device().type();
  if ((dev != c10::kCPU && dev != c10::kCUDA) || p.layout() != c10::kStrided ||
      !at::isFloatingType(p.scalar_type()) || !p.is_contiguous())
    return false;
  auto same = [&](const at::Tensor& t) {
    return t.defined() && t.layout() == c10::kStrided && t.is_contiguous() &&
           t.scalar_type() == p.scalar_type() && t.device() == p.device() && t.sizes() == p.sizes();
  };
  return same(grad) && same(state.exp_avg()) && same(state.exp_avg_sq()) &&
         (!amsgrad || same(state.max_exp_avg_sq()));
}

/// The tensors of one at::_fused_adamw_ call (one group, one device and dtype).
struct FusedBatch {
  c10::Device device;
  c10::ScalarType dtype;
  std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs;
  std::vector<int64_t> steps;
};

}  // namespace

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const AdamWOptions&>(group.options());
    std::vector<FusedBatch> batches;  // usually one
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto& grad = p.grad();
      auto it = state_.find(p.unsafeGetTensorImpl());
      if (it == state_.end()) {  // as AdamW: zero moments, step 0
        auto st = std::make_unique<AdamWParamState>();
        st->step(0);
        st->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        st->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        if (o.amsgrad()) st->max_exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state_.emplace(p.unsafeGetTensorImpl(), std::move(st)).first;
      }
      auto& state = static_cast<AdamWParamState&>(*it->second);
      state.step(state.step() + 1);
      if (!fusable(p, grad, state, o.amsgrad())) {
        adamw_update(p, grad, state, o);
        continue;
      }
      auto b_it = std::find_if(batches.begin(), batches.end(), [&](const FusedBatch& x) {
        return x.device == p.device() && x.dtype == p.scalar_type();
      });
      if (b_it == batches.end())
        b_it = batches.insert(batches.end(),
                              FusedBatch{p.device(), p.scalar_type(), {}, {}, {}, {}, {}, {}});
      auto& b = *b_it;
      b.params.push_back(p);
      b.grads.push_back(grad);
      b.exp_avgs.push_back(state.exp_avg());
      b.exp_avg_sqs.push_back(state.exp_avg_sq());
      if (o.amsgrad()) b.max_exp_avg_sqs.push_back(state.max_exp_avg_sq());
      b.steps.push_back(state.step());
    }
    for (auto& b : batches) {
      // The kernel reads each parameter's step count from a float tensor (as PyTorch's
      // fused AdamW keeps it) and does not change it; parameters at the same step share one.
      std::map<int64_t, at::Tensor> step_tensors;
      std::vector<at::Tensor> steps;
      steps.reserve(b.steps.size());
      for (int64_t s : b.steps) {
        auto& t = step_tensors[s];
        if (!t.defined())
          t = at::full({}, static_cast<double>(s), at::TensorOptions(at::kFloat).device(b.device));
        steps.push_back(t);
      }
      at::_fused_adamw_(b.params, b.grads, b.exp_avgs, b.exp_avg_sqs, b.max_exp_avg_sqs, steps,
                        o.lr(), std::get<0>(o.betas()), std::get<1>(o.betas()), o.weight_decay(),
                        o.eps(), o.amsgrad(), /*maximize=*/false);
    }
  }
  return loss;
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
                      "expected at least one trainable parameter but all ", summary.frozen_tensors,
                      " are frozen. HINT: check train.freeze (vision and text both frozen?)");

  auto options = [&](double wd) {
    torch::optim::AdamWOptions o(cfg.lr);
    o.betas(std::make_tuple(cfg.betas[0], cfg.betas[1])).eps(cfg.eps).weight_decay(wd);
    return o;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) {
    groups.emplace_back(decay,
                        std::make_unique<torch::optim::AdamWOptions>(options(cfg.weight_decay)));
    summary.groups.push_back(std::move(sd));
  }
  if (!no_decay.empty()) {
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(options(0.0)));
    summary.groups.push_back(std::move(sn));
  }
  BuiltOptimizer out;
  out.optimizer = std::make_unique<FusedAdamW>(groups, options(cfg.weight_decay));
  out.summary = std::move(summary);
  return out;
}

int64_t vit_layer_id(const std::string& name, int64_t layers) {
  for (const char* k : {"visual.conv1", "visual.class_embedding", "visual.register_embedding",
                        "visual.positional_embedding", "visual.ln_pre"})
    if (name.rfind(k, 0) == 0) return 0;
  const std::string blocks = "visual.transformer.resblocks.";
  if (name.rfind(blocks, 0) == 0) {
    const size_t dot = name.find('.', blocks.size());
    return std::stoll(name.substr(blocks.size(), dot - blocks.size())) + 1;
  }
  return layers + 1;
}

LayerDecayOptimizer build_layer_decay_adamw(const torch::nn::Module& module,
                                            const LayerDecayOptions& o) {
  // (layer id, no_decay) -> group; std::map keeps them in layer order, decay first.
  std::map<std::pair<int64_t, bool>, std::pair<std::vector<torch::Tensor>, ParamGroupSummary>>
      by_key;
  LayerDecayOptimizer out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    const auto& p = item.value();
    if (!p.requires_grad()) {
      out.summary.frozen_tensors += 1;
      out.summary.frozen_numel += p.numel();
      continue;
    }
    const bool nd = is_no_decay(item.key(), p, o.no_decay);
    const int64_t id = vit_layer_id(item.key(), o.layers);
    auto& [params, sum] = by_key[{id, nd}];
    if (params.empty()) {
      sum.name = fmt::format("layer_{}_{}", id, nd ? "no_decay" : "decay");
      sum.weight_decay = nd ? 0.0 : o.weight_decay;
    }
    params.push_back(p);
    sum.tensors += 1;
    sum.numel += p.numel();
    sum.names.push_back(item.key());
  }
  RETCLIP_CHECK_USAGE(!by_key.empty(), "expected at least one trainable parameter but all ",
                      out.summary.frozen_tensors,
                      " are frozen. HINT: check finetune.freeze (head-only keeps the head)");
  auto options = [&](double wd) {
    torch::optim::AdamWOptions a(1e-3);
    a.betas(std::make_tuple(o.betas[0], o.betas[1])).eps(o.eps).weight_decay(wd);
    return a;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (auto& [key, g] : by_key) {
    groups.emplace_back(
        g.first, std::make_unique<torch::optim::AdamWOptions>(options(g.second.weight_decay)));
    out.lr_scale.push_back(std::pow(o.layer_decay, static_cast<double>(o.layers + 1 - key.first)));
    out.summary.groups.push_back(std::move(g.second));
  }
  out.optimizer = std::make_unique<FusedAdamW>(groups, options(o.weight_decay));
  return out;
}

void set_lr(torch::optim::Optimizer& optimizer, double lr, const std::vector<double>& lr_scale) {
  auto& groups = optimizer.param_groups();
  RETCLIP_CHECK(groups.size() == lr_scale.size(), "expected one lr scale per parameter group (",
                groups.size(), ") but got ", lr_scale.size());
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(lr * lr_scale[g]);
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
  // torch::nn::utils::clip_grad_norm_ with the per-parameter loops replaced by foreach
  // ops (same kernels per tensor, one dispatch for the list).
  std::vector<torch::Tensor> grads;
  grads.reserve(params.size());
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad().detach());
  if (grads.empty()) return 0.0;
  auto norms = at::_foreach_norm(grads, 2);
  auto total = norms.size() == 1 ? norms[0] : at::stack(norms).norm(2);
  if (max_norm > 0) {
    auto coef = at::clamp(max_norm / (total + 1e-6), std::nullopt, 1.0);
    at::_foreach_mul_(grads, coef);
  }
  return total.item<double>();
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
