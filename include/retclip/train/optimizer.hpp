// AdamW with RET-CLIP's two parameter groups (decay / no decay), learning-rate
// setting, optimizer-state (de)serialisation for checkpoints, and gradient helpers
// (total-norm clipping, finiteness check) used by the trainer loop.
//
//   auto built = train::build_adamw(*model, cfg.optim);
//   log::info("{}", built.summary.to_string());
//   train::set_lr(*built.optimizer, train::lr_at(cfg.optim, step, total));
//   double norm = train::clip_grad_norm(train::optimizer_params(*built.optimizer), 1.0);
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"

namespace retclip::train {

/// Name fragments that always mean "no weight decay", from the reference
/// (Chinese-CLIP / RET-CLIP main.py: `exclude = p.ndim < 2 or "bn" in n or "ln" in n
/// or "bias" in n or "logit_scale" in n`).
const std::vector<std::string>& reference_no_decay_patterns();

/// The rule: a trainable parameter takes no weight decay when it has fewer than 2
/// dimensions, or its name contains any reference pattern ("bn", "ln", "bias",
/// "logit_scale"), or any pattern of `extra_patterns` (optim.no_decay). Substring
/// match, case-sensitive, on the full dotted state-dict name.
bool is_no_decay(const std::string& name, const torch::Tensor& param,
                 const std::vector<std::string>& extra_patterns);

/// One parameter group, as built (for logs and tests).
struct ParamGroupSummary {
  std::string name;  ///< "decay" | "no_decay"
  double weight_decay = 0;
  int64_t tensors = 0;             ///< number of parameter tensors
  int64_t numel = 0;               ///< number of scalar parameters
  std::vector<std::string> names;  ///< parameter names, in module order
};

struct OptimizerSummary {
  std::vector<ParamGroupSummary> groups;  ///< non-empty groups only, decay first
  int64_t frozen_tensors = 0;             ///< requires_grad = false, not optimised
  int64_t frozen_numel = 0;
  /// "AdamW: decay 12 tensors / 1.23M params (wd 0.001), no_decay ..., frozen ...".
  std::string to_string() const;
};

/// torch::optim::AdamW whose step() updates all parameters of a group with one call of
/// ATen's fused AdamW kernel (at::_fused_adamw_: one pass over param, grad and moments
/// per tensor) instead of LibTorch's per-parameter loop of ~10 tensor ops. Same options,
/// same state objects (AdamWParamState: step, exp_avg, exp_avg_sq), so save/load and
/// the optimizer.pt format are unchanged and the two classes load each other's state.
/// Results equal torch::optim::AdamW up to float rounding (a few ulp per step; the
/// kernel evaluates the same formulas in a different order). Parameters the kernel
/// cannot take (sparse or non-contiguous gradients, non-contiguous parameters or
/// moments, devices other than CPU/CUDA) go through AdamW's own update.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

struct BuiltOptimizer {
  std::unique_ptr<torch::optim::AdamW> optimizer;  ///< a FusedAdamW
  OptimizerSummary summary;
};

/// AdamW over `module`'s named parameters (recursively), split into a decay group
/// (weight_decay = cfg.weight_decay) and a no-decay group (weight_decay = 0), both with
/// lr = cfg.lr, betas = cfg.betas, eps = cfg.eps. Parameters with requires_grad = false
/// are left out. Empty groups are not created. Throws UsageError when nothing is
/// trainable. The optimizer is a FusedAdamW.
BuiltOptimizer build_adamw(const torch::nn::Module& module, const config::OptimConfig& cfg);

/// Layer-wise learning-rate decay (BEiT / RETFound `param_groups_lrd`) for a ViT of
/// `layers` blocks: a parameter's layer id is 0 for the patch/position embeddings
/// (`visual.conv1`, `visual.class_embedding`, `visual.register_embedding`,
/// `visual.positional_embedding`,
/// `visual.ln_pre`), i + 1 for `visual.transformer.resblocks.{i}.*`, and layers + 1 for
/// everything after the blocks (`visual.ln_post`, `visual.proj`, heads); its lr scale is
/// layer_decay ^ (layers + 1 - layer id), so the head trains at the peak lr and the
/// embeddings at layer_decay ^ (layers + 1) of it.
int64_t vit_layer_id(const std::string& name, int64_t layers);

struct LayerDecayOptions {
  int64_t layers = 12;  ///< ViT blocks
  double layer_decay = 0.65;
  double weight_decay = 0.05;
  std::vector<std::string> no_decay;  ///< extra no-decay fragments (is_no_decay)
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
};

/// AdamW with one group per (layer id, decay / no decay): group names "layer_<id>_decay" /
/// "layer_<id>_no_decay", in order of layer id; lr_scale[g] belongs to group g. Frozen
/// parameters are left out; throws UsageError when nothing is trainable.
struct LayerDecayOptimizer {
  std::unique_ptr<torch::optim::AdamW> optimizer;  ///< a FusedAdamW
  std::vector<double> lr_scale;                    ///< per parameter group
  OptimizerSummary summary;                        ///< per group, same order
};
LayerDecayOptimizer build_layer_decay_adamw(const torch::nn::Module& module,
                                            const LayerDecayOptions& options);

/// Sets group g's learning rate to lr * lr_scale[g] (lr_scale must match the groups).
void set_lr(torch::optim::Optimizer& optimizer, double lr, const std::vector<double>& lr_scale);

/// Sets the learning rate of every parameter group.
void set_lr(torch::optim::Optimizer& optimizer, double lr);

/// Learning rate of the first parameter group (0 when there is none).
double get_lr(const torch::optim::Optimizer& optimizer);

/// All parameters of all groups, in group order.
std::vector<torch::Tensor> optimizer_params(const torch::optim::Optimizer& optimizer);

/// Optimizer state (moments, step counts, group options) as bytes of a LibTorch
/// archive; load_optimizer_state restores it into an optimizer built over the same
/// parameters in the same order. Throws Error naming `origin` on a mismatch.
std::string save_optimizer_state(const torch::optim::Optimizer& optimizer);
void load_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& bytes,
                          const std::string& origin = "optimizer state");

/// File forms of the above (the file is written atomically).
void save_optimizer_state(const torch::optim::Optimizer& optimizer,
                          const std::filesystem::path& path);
void load_optimizer_state_file(torch::optim::Optimizer& optimizer,
                               const std::filesystem::path& path);

/// Total 2-norm of the gradients of `params` (parameters without a gradient are
/// skipped). When max_norm > 0 the gradients are scaled in place so that the total
/// norm is at most max_norm (same values as torch::nn::utils::clip_grad_norm_, computed
/// with the foreach ops: one call for all norms, one for the scaling). Returns the norm
/// before clipping; may be inf or nan when a gradient is.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

/// True when every defined gradient of `params` is finite (one device sync).
bool grads_finite(const std::vector<torch::Tensor>& params);

}  // namespace retclip::train
