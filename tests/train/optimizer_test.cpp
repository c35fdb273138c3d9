// AdamW parameter groups (reference no-decay rule), set_lr, a save/load round trip
// that continues bit-identically, the fused AdamW step against torch::optim::AdamW,
// and the gradient-norm / finiteness helpers.
#include <ftw.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "retclip/train/optimizer.hpp"
#include "retclip/util/error.hpp"

namespace {

// std::filesystem::remove_all resolves to libtorch.so's broken copy (null jump):
// test directories are removed with nftw instead.
int rm_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
void rm_rf(const std::filesystem::path& p) { ::nftw(p.c_str(), rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

namespace fs = std::filesystem;
using namespace retclip;

// Names chosen to exercise every branch of the rule (RET-CLIP key names).
struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    conv1 = register_parameter("conv1_weight", torch::randn({4, 3, 2, 2}));
    class_embedding = register_parameter("class_embedding", torch::randn({4}));
    pos = register_parameter("positional_embedding", torch::randn({5, 4}));
    fc = register_module("fc", torch::nn::Linear(4, 6));      // fc.weight decays, fc.bias not
    ln = register_module("ln_pre", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})));
    proj = register_parameter("proj", torch::randn({6, 3}));
    logit_scale = register_parameter("logit_scale", torch::ones({}) * 4.5);
    frozen = register_parameter("frozen_proj", torch::randn({3, 3}), /*requires_grad=*/false);
  }
  torch::Tensor forward(const torch::Tensor& x) {  // x: [B, 4]
    auto h = ln->forward(x + class_embedding + pos.sum(0) + conv1.mean());
    return torch::matmul(torch::relu(fc->forward(h)), proj).matmul(frozen) * logit_scale.exp();
  }
  torch::Tensor conv1, class_embedding, pos, proj, logit_scale, frozen;
  torch::nn::Linear fc{nullptr};
  torch::nn::LayerNorm ln{nullptr};
};
TORCH_MODULE(Tiny);

config::OptimConfig optim_cfg() {
  config::OptimConfig c;
  c.lr = 1e-2;
  c.weight_decay = 0.1;
  return c;
}

const train::ParamGroupSummary& group(const train::OptimizerSummary& s, const std::string& n) {
  for (const auto& g : s.groups)
    if (g.name == n) return g;
  throw std::runtime_error("no group " + n);
}

bool has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST(Optimizer, NoDecayIsBaseRulePlusConfiguredNames) {
  torch::manual_seed(0);
  Tiny m;
  auto built = train::build_adamw(*m, optim_cfg());
  const auto& d = group(built.summary, "decay");
  const auto& n = group(built.summary, "no_decay");
  std::cout << built.summary.to_string() << "\n";
  // named_parameters order: own parameters first, then submodules'.
  EXPECT_EQ(d.names, (std::vector<std::string>{"conv1_weight", "proj", "fc.weight"}));
  // positional_embedding is 2-D: only optim.no_decay keeps it out of decay.
  EXPECT_TRUE(has(n.names, "positional_embedding"));
  EXPECT_TRUE(has(n.names, "class_embedding"));  // 1-D
  EXPECT_TRUE(has(n.names, "fc.bias"));
  EXPECT_TRUE(has(n.names, "ln_pre.weight"));
  EXPECT_TRUE(has(n.names, "logit_scale"));
  EXPECT_FALSE(has(n.names, "frozen_proj"));
  EXPECT_FALSE(has(d.names, "frozen_proj"));
  EXPECT_EQ(built.summary.frozen_tensors, 1);
  EXPECT_EQ(built.summary.frozen_numel, 9);
  EXPECT_EQ(d.numel, 4 * 3 * 2 * 2 + 6 * 4 + 6 * 3);
  EXPECT_EQ(d.tensors + n.tensors, 9);

  const auto& groups = built.optimizer->param_groups();
  ASSERT_EQ(groups.size(), 2u);
  const auto& o0 = static_cast<const torch::optim::AdamWOptions&>(groups[0].options());
  const auto& o1 = static_cast<const torch::optim::AdamWOptions&>(groups[1].options());
  EXPECT_DOUBLE_EQ(o0.weight_decay(), 0.1);
  EXPECT_DOUBLE_EQ(o1.weight_decay(), 0.0);
  EXPECT_DOUBLE_EQ(o0.lr(), 1e-2);
  EXPECT_DOUBLE_EQ(std::get<0>(o0.betas()), 0.9);
  EXPECT_DOUBLE_EQ(std::get<1>(o1.betas()), 0.98);
  EXPECT_DOUBLE_EQ(o1.eps(), 1e-6);

  // optim.no_decay: [] is the reference's rule alone (ndim < 2, bn / ln / bias /
  // logit_scale): the 2-D positional embedding is decayed there.
  auto ref_cfg = optim_cfg();
  ref_cfg.no_decay.clear();
  auto ref = train::build_adamw(*m, ref_cfg);
  EXPECT_TRUE(has(group(ref.summary, "decay").names, "positional_embedding"));
  EXPECT_TRUE(has(group(ref.summary, "no_decay").names, "class_embedding"));
  EXPECT_TRUE(has(group(ref.summary, "no_decay").names, "logit_scale"));

  // Without the configurable patterns, the 2-D positional_embedding decays.
  auto cfg = optim_cfg();
  cfg.no_decay.clear();
  auto built2 = train::build_adamw(*m, cfg);
  EXPECT_TRUE(has(group(built2.summary, "decay").names, "positional_embedding"));
}

TEST(Optimizer, AllFrozenIsUsageError) {
  Tiny m;
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  EXPECT_THROW(train::build_adamw(*m, optim_cfg()), UsageError);
}

TEST(Optimizer, SetLrAllGroups) {
  Tiny m;
  auto built = train::build_adamw(*m, optim_cfg());
  train::set_lr(*built.optimizer, 3.5e-4);
  for (const auto& g : built.optimizer->param_groups())
    EXPECT_DOUBLE_EQ(g.options().get_lr(), 3.5e-4);
  EXPECT_DOUBLE_EQ(train::get_lr(*built.optimizer), 3.5e-4);
}

void train_steps(Tiny& m, torch::optim::Optimizer& opt, int steps, int64_t seed) {
  torch::manual_seed(seed);
  for (int i = 0; i < steps; ++i) {
    auto x = torch::randn({8, 4});
    opt.zero_grad();
    m->forward(x).pow(2).mean().backward();
    train::set_lr(opt, 1e-2 * (i + 1));
    opt.step();
  }
}

TEST(Optimizer, SaveLoadContinuesBitIdentically) {
  torch::manual_seed(1);
  Tiny a;
  auto oa = train::build_adamw(*a, optim_cfg());
  train_steps(a, *oa.optimizer, 3, 10);

  // Snapshot: weights + optimizer state, through a file.
  fs::path dir = fs::temp_directory_path() / ("retclip_optim_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  train::save_optimizer_state(*oa.optimizer, dir / "optimizer.pt");
  Tiny b;
  {
    torch::NoGradGuard ng;
    auto pa = a->named_parameters();
    for (auto& item : b->named_parameters()) item.value().copy_(pa[item.key()]);
  }
  auto ob = train::build_adamw(*b, optim_cfg());
  train::load_optimizer_state_file(*ob.optimizer, dir / "optimizer.pt");
  rm_rf(dir);

  train_steps(a, *oa.optimizer, 4, 20);
  train_steps(b, *ob.optimizer, 4, 20);
  auto pb = b->named_parameters();
  double max_diff = 0;
  for (const auto& item : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
    max_diff = std::max(max_diff, (item.value() - pb[item.key()]).abs().max().item<double>());
  }
  std::cout << "max |a - b| after 4 more steps: " << max_diff << "\n";
  EXPECT_EQ(max_diff, 0.0);

  // A fresh optimizer (no state) diverges: the test would notice a no-op load.
  Tiny c;
  {
    torch::NoGradGuard ng;
    auto pa = b->named_parameters();
    for (auto& item : c->named_parameters()) item.value().copy_(pa[item.key()]);
  }
  auto oc = train::build_adamw(*c, optim_cfg());
  train_steps(b, *ob.optimizer, 1, 30);
  train_steps(c, *oc.optimizer, 1, 30);
  EXPECT_FALSE(torch::equal(b->proj, c->proj));
}

TEST(Optimizer, LoadIntoDifferentModelFailsWithContext) {
  Tiny a;
  auto oa = train::build_adamw(*a, optim_cfg());
  train_steps(a, *oa.optimizer, 1, 3);
  auto bytes = train::save_optimizer_state(*oa.optimizer);
  torch::nn::Linear other(4, 4);
  auto cfg = optim_cfg();
  auto ob = train::build_adamw(*other, cfg);
  try {
    train::load_optimizer_state(*ob.optimizer, bytes, "ckpt/optimizer.pt");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt/optimizer.pt"), std::string::npos) << e.what();
  }
}

// Copies b's parameter values into a.
void copy_params(Tiny& dst, Tiny& src) {
  torch::NoGradGuard ng;
  auto ps = src->named_parameters();
  for (auto& item : dst->named_parameters()) item.value().copy_(ps[item.key()]);
}

double max_param_diff(Tiny& a, Tiny& b, double* max_abs = nullptr) {
  auto pb = b->named_parameters();
  double d = 0, m = 0;
  for (const auto& item : a->named_parameters()) {
    d = std::max(d, (item.value() - pb[item.key()]).abs().max().item<double>());
    m = std::max(m, item.value().abs().max().item<double>());
  }
  if (max_abs) *max_abs = m;
  return d;
}

TEST(Optimizer, BuildAdamwIsFused) {
  Tiny m;
  auto built = train::build_adamw(*m, optim_cfg());
  EXPECT_NE(dynamic_cast<train::FusedAdamW*>(built.optimizer.get()), nullptr);
}

// The fused step (one at::_fused_adamw_ call per group) follows torch::optim::AdamW.
// Each of 50 steps (changing lr, both groups, step counts 1..50) starts the reference
// from the fused optimizer's current parameters and state (loaded through the
// optimizer-state archive, as a resume does) and compares one step: equal up to float
// rounding. (Free-running trajectories drift apart further: Adam amplifies rounding
// where a gradient hovers around zero, by up to ~lr per step, for any two
// implementations that round differently.)
TEST(Optimizer, FusedMatchesLibtorchAdamw) {
  for (bool amsgrad : {false, true}) {
    torch::manual_seed(5);
    Tiny a, b;
    auto cfg = optim_cfg();
    auto fa = train::build_adamw(*a, cfg);
    auto ob = train::build_adamw(*b, cfg);  // only for b's groups, in the same order
    for (auto* o : {fa.optimizer.get(), ob.optimizer.get()})
      for (auto& g : o->param_groups())
        static_cast<torch::optim::AdamWOptions&>(g.options()).amsgrad(amsgrad);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    for (auto& g : ob.optimizer->param_groups()) groups.emplace_back(g.params(), g.options().clone());
    torch::optim::AdamW ref(groups);
    const int steps = 50;
    torch::manual_seed(7);
    double max_diff = 0, scale = 0;
    for (int i = 0; i < steps; ++i) {
      copy_params(b, a);
      if (i > 0) train::load_optimizer_state(ref, train::save_optimizer_state(*fa.optimizer));
      auto x = torch::randn({8, 4});
      fa.optimizer->zero_grad();
      ref.zero_grad();
      a->forward(x).pow(2).mean().backward();
      b->forward(x).pow(2).mean().backward();
      const double lr = 1e-2 * (1 + i % 5);  // changing lr, as a schedule does
      train::set_lr(*fa.optimizer, lr);
      train::set_lr(ref, lr);
      fa.optimizer->step();
      ref.step();
      max_diff = std::max(max_diff, max_param_diff(a, b, &scale));
    }
    std::cout << "amsgrad " << amsgrad << ": max |fused - libtorch| of one step, over " << steps
              << " steps: " << max_diff << " (max |param| " << scale << ")\n";
    EXPECT_LE(max_diff, 1e-6 * std::max(1.0, scale));
    // Same state: step counts equal, moments equal up to rounding.
    auto pa = fa.optimizer->param_groups()[0].params();
    auto pr = ref.param_groups()[0].params();
    ASSERT_EQ(pa.size(), pr.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      auto& sa = static_cast<torch::optim::AdamWParamState&>(
          *fa.optimizer->state().at(pa[i].unsafeGetTensorImpl()));
      auto& sr =
          static_cast<torch::optim::AdamWParamState&>(*ref.state().at(pr[i].unsafeGetTensorImpl()));
      EXPECT_EQ(sa.step(), steps);
      EXPECT_EQ(sr.step(), steps);
      EXPECT_TRUE(torch::allclose(sa.exp_avg(), sr.exp_avg(), 1e-5, 1e-8));
      EXPECT_TRUE(torch::allclose(sa.exp_avg_sq(), sr.exp_avg_sq(), 1e-5, 1e-10));
    }
  }
}

// A parameter the kernel cannot take (non-contiguous) goes through AdamW's own update,
// bit-identical to torch::optim::AdamW.
TEST(Optimizer, FusedFallbackForNonContiguous) {
  torch::manual_seed(3);
  auto base_a = torch::randn({5, 4}), base_b = base_a.clone();
  auto pa = base_a.t().set_requires_grad(true);  // non-contiguous view, leaf
  auto pb = base_b.t().set_requires_grad(true);
  ASSERT_FALSE(pa.is_contiguous());
  auto opts = torch::optim::AdamWOptions(1e-2).weight_decay(0.1);
  train::FusedAdamW fa({pa}, opts);
  torch::optim::AdamW ref({pb}, opts);
  for (int i = 0; i < 5; ++i) {
    auto g = torch::randn({4, 5});
    pa.mutable_grad() = g.t().contiguous().t();  // non-contiguous grad
    pb.mutable_grad() = g.t().contiguous().t();
    fa.step();
    ref.step();
  }
  EXPECT_TRUE(torch::equal(pa, pb));
}

// Optimizer state saved by the fused optimizer loads into torch::optim::AdamW and back
// (same archive format), and the fused optimizer continues bit-identically from it.
TEST(Optimizer, FusedStateIsAdamwState) {
  torch::manual_seed(8);
  Tiny a, b;
  copy_params(b, a);
  auto oa = train::build_adamw(*a, optim_cfg());
  train_steps(a, *oa.optimizer, 3, 11);
  const auto bytes = train::save_optimizer_state(*oa.optimizer);
  // Into a plain AdamW over b and out again.
  copy_params(b, a);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto ob = train::build_adamw(*b, optim_cfg());
  for (auto& g : ob.optimizer->param_groups()) groups.emplace_back(g.params(), g.options().clone());
  torch::optim::AdamW plain(groups);
  train::load_optimizer_state(plain, bytes);
  train::load_optimizer_state(*ob.optimizer, train::save_optimizer_state(plain));
  train_steps(a, *oa.optimizer, 4, 12);
  train_steps(b, *ob.optimizer, 4, 12);
  EXPECT_EQ(max_param_diff(a, b), 0.0);
}

// clip_grad_norm equals torch::nn::utils::clip_grad_norm_ exactly (norm and gradients).
TEST(Optimizer, ClipGradNormMatchesLibtorch) {
  torch::manual_seed(4);
  for (double max_norm : {0.0, 0.5, 1e6}) {
    std::vector<torch::Tensor> a, b;
    for (auto shape : {std::vector<int64_t>{3, 7}, {5}, {2, 2, 3}, {1}}) {
      auto p = torch::zeros(shape, torch::requires_grad());
      p.mutable_grad() = torch::randn(shape);
      auto q = torch::zeros(shape, torch::requires_grad());
      q.mutable_grad() = p.grad().clone();
      a.push_back(p);
      b.push_back(q);
    }
    a.push_back(torch::zeros({2}, torch::requires_grad()));  // no grad: skipped
    const double na = train::clip_grad_norm(a, max_norm);
    const double nb = max_norm > 0
                          ? torch::nn::utils::clip_grad_norm_(b, max_norm, 2.0)
                          : torch::nn::utils::clip_grad_norm_(b, 1e30, 2.0);
    EXPECT_EQ(na, nb) << max_norm;
    for (size_t i = 0; i < b.size(); ++i) EXPECT_TRUE(torch::equal(a[i].grad(), b[i].grad())) << i;
  }
}

TEST(Optimizer, ClipGradNormAndFinite) {
  auto p1 = torch::zeros({2}, torch::requires_grad());
  auto p2 = torch::zeros({1}, torch::requires_grad());
  auto p3 = torch::zeros({1}, torch::requires_grad());  // no grad
  p1.mutable_grad() = torch::tensor({3.0f, 0.0f});
  p2.mutable_grad() = torch::tensor({4.0f});
  std::vector<torch::Tensor> ps{p1, p2, p3};
  EXPECT_NEAR(train::clip_grad_norm(ps, 0.0), 5.0, 1e-6);  // no clipping
  EXPECT_FLOAT_EQ(p1.grad()[0].item<float>(), 3.0f);
  EXPECT_NEAR(train::clip_grad_norm(ps, 1.0), 5.0, 1e-6);  // returns the norm before
  EXPECT_NEAR(p1.grad()[0].item<float>(), 0.6f, 1e-5);
  EXPECT_NEAR(p2.grad()[0].item<float>(), 0.8f, 1e-5);
  EXPECT_NEAR(train::clip_grad_norm(ps, 0.0), 1.0, 1e-5);
  EXPECT_TRUE(train::grads_finite(ps));
  p2.mutable_grad() = torch::tensor({std::numeric_limits<float>::infinity()});
  EXPECT_FALSE(train::grads_finite(ps));
  EXPECT_TRUE(std::isinf(train::clip_grad_norm(ps, 0.0)));
  p2.mutable_grad() = torch::tensor({std::numeric_limits<float>::quiet_NaN()});
  EXPECT_FALSE(train::grads_finite(ps));
  EXPECT_TRUE(train::grads_finite({p3}));
}

}  // namespace

// Layer-wise lr decay (fine-tuning): every group's lr is lr * decay^(L + 1 - layer id),
// with layer id 0 for the embeddings, i + 1 for block i, L + 1 for the rest; no weight
// decay on 1-D parameters, biases and embeddings; frozen parameters left out.
TEST(Optimizer, LayerDecayGroupLrFollowsTheFormula) {
  using retclip::train::vit_layer_id;
  const int64_t L = 4;
  EXPECT_EQ(vit_layer_id("visual.conv1.weight", L), 0);
  EXPECT_EQ(vit_layer_id("visual.class_embedding", L), 0);
  EXPECT_EQ(vit_layer_id("visual.ln_pre.bias", L), 0);
  EXPECT_EQ(vit_layer_id("visual.transformer.resblocks.0.ln_1.weight", L), 1);
  EXPECT_EQ(vit_layer_id("visual.transformer.resblocks.3.mlp.c_fc.weight", L), 4);
  EXPECT_EQ(vit_layer_id("visual.ln_post.weight", L), L + 1);
  EXPECT_EQ(vit_layer_id("head.weight", L), L + 1);

  // A module with RET-CLIP's vision names: 4 blocks, embeddings, ln_post, a head.
  struct Net : torch::nn::Module {
    Net() {
      auto visual = register_module("visual", std::make_shared<torch::nn::Module>());
      visual->register_module("conv1", torch::nn::Linear(3, 3));
      visual->register_parameter("positional_embedding", torch::zeros({5, 3}));
      auto tr = visual->register_module("transformer", std::make_shared<torch::nn::Module>());
      auto blocks = tr->register_module("resblocks", std::make_shared<torch::nn::Module>());
      for (int i = 0; i < 4; ++i) blocks->register_module(std::to_string(i), torch::nn::Linear(3, 3));
      visual->register_module("ln_post", torch::nn::LayerNorm(torch::nn::LayerNormOptions({3})));
      register_module("head", torch::nn::Linear(3, 2));
    }
  } net;
  net.named_parameters()["visual.transformer.resblocks.0.weight"].set_requires_grad(false);
  retclip::train::LayerDecayOptions o;
  o.layers = L;
  o.layer_decay = 0.65;
  o.weight_decay = 0.05;
  o.no_decay = {"positional_embedding"};
  auto built = retclip::train::build_layer_decay_adamw(net, o);
  const double lr = 2e-3;
  retclip::train::set_lr(*built.optimizer, lr, built.lr_scale);
  const auto& groups = built.optimizer->param_groups();
  ASSERT_EQ(groups.size(), built.summary.groups.size());
  ASSERT_EQ(groups.size(), built.lr_scale.size());
  EXPECT_EQ(built.summary.frozen_tensors, 1);
  int64_t checked = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& sum = built.summary.groups[g];
    for (const auto& name : sum.names) {
      const int64_t id = vit_layer_id(name, L);
      EXPECT_NEAR(groups[g].options().get_lr(), lr * std::pow(0.65, static_cast<double>(L + 1 - id)),
                  1e-15)
          << name;
      const bool one_d = name.find("bias") != std::string::npos ||
                         name.find("ln_post") != std::string::npos ||
                         name.find("positional_embedding") != std::string::npos;
      const auto& opts = static_cast<const torch::optim::AdamWOptions&>(groups[g].options());
      EXPECT_DOUBLE_EQ(opts.weight_decay(), one_d ? 0.0 : 0.05) << name;
      EXPECT_NE(name, "visual.transformer.resblocks.0.weight");
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int64_t>(net.parameters().size()) - 1);
  // The head at the peak lr, the embeddings at decay^(L + 1) of it.
  EXPECT_DOUBLE_EQ(built.lr_scale.back(), 1.0);
  EXPECT_NEAR(built.lr_scale.front(), std::pow(0.65, L + 1), 1e-15);
}
