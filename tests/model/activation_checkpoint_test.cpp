// Tests of activation checkpointing: gradients equal the plain path (eval mode, and
// train mode with dropout replayed), the no-grad fallback, and that blocks really run
// through the checkpoint function.
#include <gtest/gtest.h>

#include <iostream>
#include <map>

#include <ATen/autocast_mode.h>

#include "../support/model.hpp"
#include "retclip/loss/tripartite.hpp"
#include "retclip/model/activation_checkpoint.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/model/retclip.hpp"

using namespace retclip;
using test::max_diff;
using test::micro_options;
using test::tokens_for;

namespace {

/// Gradients of a tripartite loss step with checkpointing on/off, same seed.
std::map<std::string, torch::Tensor> step_grads(bool checkpointing, bool train) {
  torch::manual_seed(11);
  model::RetClip net(micro_options());
  net->set_grad_checkpointing(checkpointing);
  if (train)
    net->train();
  else
    net->eval();
  auto left = torch::randn({4, 3, 32, 32}), right = torch::randn({4, 3, 32, 32});
  auto tok = tokens_for(4, 10, 100);
  torch::manual_seed(99);  // the dropout stream
  auto e = net->forward(left, right, tok, torch::tensor({true, false, true, true}),
                        torch::tensor({true, true, true, false}));
  loss::tripartite_loss(e, loss::TripartiteLossOptions()).total.backward();
  std::map<std::string, torch::Tensor> g;
  for (const auto& p : net->named_parameters()) g[p.key()] = p.value().grad().clone();
  return g;
}

void expect_same_grads(bool train) {
  auto plain = step_grads(false, train);
  auto ckpt = step_grads(true, train);
  double worst = 0;
  for (const auto& [k, g] : plain) {
    ASSERT_TRUE(ckpt[k].defined()) << k;
    const double d = max_diff(g, ckpt[k]);
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-6) << k;
  }
  std::cout << (train ? "train" : "eval") << " mode: " << plain.size()
            << " gradients, max |diff| checkpointed vs plain " << worst << "\n";
}

}  // namespace

TEST(Checkpointing, GradientsEqualPlainPathInEvalMode) {
  expect_same_grads(false);
}

TEST(Checkpointing, GradientsEqualPlainPathInTrainModeWithDropout) {
  expect_same_grads(true);
  // Dropout is really active: two train-mode steps with different streams differ.
  torch::manual_seed(5);
  model::BertEncoder bert(model::text_preset("bert-micro", 100));
  auto tok = tokens_for(2, 6, 100);
  auto a = bert->forward(tok), b = bert->forward(tok);
  EXPECT_GT(max_diff(a, b), 1e-4);
}

TEST(Checkpointing, FrozenInputAndNoGradModeFallBack) {
  torch::manual_seed(0);
  auto w = torch::randn({4, 4}, torch::requires_grad());
  auto x = torch::randn({2, 4});  // input without grad: only w gets a gradient
  auto fn = [&](const at::Tensor& in) { return torch::tanh(in.matmul(w)); };
  auto y = model::checkpoint_block(fn, x, {w});
  EXPECT_TRUE(y.requires_grad());
  y.sum().backward();
  auto g = w.grad().clone();
  w.mutable_grad().zero_();
  fn(x).sum().backward();
  EXPECT_LE(max_diff(g, w.grad()), 1e-7);
  torch::NoGradGuard ng;
  EXPECT_FALSE(model::checkpoint_block(fn, x, {w}).requires_grad());
}

TEST(Checkpointing, BlocksRunThroughTheCheckpointFunction) {
  torch::manual_seed(0);
  model::BertEncoder bert(model::text_preset("bert-micro", 100));
  auto tok = tokens_for(2, 6, 100);
  EXPECT_EQ(bert->forward_hidden(tok).grad_fn()->name().find("CheckpointFunction"),
            std::string::npos);
  bert->set_grad_checkpointing(true);
  EXPECT_NE(bert->forward_hidden(tok).grad_fn()->name().find("CheckpointFunction"),
            std::string::npos)
      << bert->forward_hidden(tok).grad_fn()->name();
}

// The recompute runs under the autocast state of the forward, not of backward's caller.
// CUDA autocast cannot run here; CPU autocast uses the same capture / restore code.
TEST(Checkpointing, RecomputeRunsUnderTheForwardsAutocastState) {
  std::vector<std::pair<bool, at::ScalarType>> seen;
  auto w = torch::randn({4, 4}, torch::requires_grad());
  model::BlockFn fn = [&](const at::Tensor& x) {
    seen.emplace_back(at::autocast::is_autocast_enabled(at::kCPU),
                      at::autocast::get_autocast_dtype(at::kCPU));
    return x.matmul(w).tanh();
  };
  auto x = torch::randn({3, 4}, torch::requires_grad());
  const bool was = at::autocast::is_autocast_enabled(at::kCPU);
  const at::ScalarType was_dtype = at::autocast::get_autocast_dtype(at::kCPU);

  // Forward under bf16 autocast, backward outside it: the recompute sees bf16 autocast.
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  auto y = model::checkpoint_block(fn, x, {w});
  at::autocast::set_autocast_enabled(at::kCPU, false);
  y.to(at::kFloat).sum().backward();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[1].first);
  EXPECT_EQ(seen[1].second, at::kBFloat16);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);                  // matmul ran in bf16 in the forward
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));  // and backward restored it

  // Forward without autocast, backward inside it: the recompute runs without.
  seen.clear();
  auto y2 = model::checkpoint_block(fn, x, {w});
  at::autocast::set_autocast_enabled(at::kCPU, true);
  y2.sum().backward();
  EXPECT_TRUE(at::autocast::is_autocast_enabled(at::kCPU));
  at::autocast::set_autocast_enabled(at::kCPU, was);
  at::autocast::set_autocast_dtype(at::kCPU, was_dtype);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_FALSE(seen[1].first);
}
