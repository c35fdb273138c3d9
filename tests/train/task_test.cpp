// The tasks: a classifier's micro-batches accumulate to the full batch's gradients (plain
// accumulation by share of rows), and the contrastive task's one-micro-batch loss is the
// loss its cached-feature forward_backward reports.
#include "retclip/train/task.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "retclip/dist/comm.hpp"
#include "retclip/dist/grad_sync.hpp"
#include "retclip/model/presets.hpp"

using namespace retclip;

namespace {

std::map<std::string, at::Tensor> task_grads(torch::nn::Module& m) {
  std::map<std::string, at::Tensor> g;
  for (auto& p : m.named_parameters())
    if (p.value().grad().defined()) g[p.key()] = p.value().grad().clone();
  return g;
}

// Forward + backward of `micro` through the task, in one process.
train::StepLosses run_task(train::Task& task, const std::vector<train::MicroBatch>& micro) {
  auto one = dist::Comm::single();
  dist::GradSync none(one, {}, 0);
  task.module().zero_grad();
  return task.forward_backward(micro, 1.0, {*one, none}, nullptr);
}

}  // namespace

TEST(Task, ClassifierMicroBatchesGiveFullBatchGradients) {
  torch::manual_seed(3);
  model::Classifier net(model::ClassifierOptions(model::vision_preset("vit-micro"), 3));
  net->eval();  // no drop-path: the passes see the same network
  auto task = std::make_shared<train::ClassifierTask>(net, torch::tensor({1.0, 2.0, 0.5}),
                                                      model::Precision::kFp32);
  const int64_t s = net->options().vision().image_size();
  train::MicroBatch b;
  b.left = torch::randn({7, 3, s, s});
  b.has_left = b.has_right = torch::ones({7}, torch::kBool);
  b.targets = torch::one_hot(torch::tensor({0, 1, 2, 2, 1, 0, 0}), 3).to(torch::kFloat);
  const auto full = run_task(*task, {b});
  const auto g_full = task_grads(*net);
  for (int64_t k : {2, 3}) {
    const auto acc = run_task(*task, train::split_batch(b, k));  // 4+3 and 3+2+2 rows
    EXPECT_NEAR(acc.total.item<double>(), full.total.item<double>(), 1e-6) << k;
    const auto g = task_grads(*net);
    ASSERT_EQ(g.size(), g_full.size());
    for (const auto& [name, t] : g_full)
      EXPECT_LT((g.at(name) - t).abs().max().item<double>(), 1e-6) << name << " k=" << k;
  }
}

TEST(Task, ContrastiveForwardLossIsTheStepLoss) {
  torch::manual_seed(5);
  auto o = model::RetClipOptions();
  o.vision(model::vision_preset("vit-micro"));
  o.text(model::text_preset("bert-micro", 50).hidden_dropout(0).attention_dropout(0));
  o.embed_dim(o.vision().embed_dim());
  model::RetClip net(o);
  train::ContrastiveTask task(net, loss::TripartiteLossOptions(), model::Precision::kFp32, 4.6);
  train::MicroBatch b{torch::randn({4, 3, 32, 32}), torch::randn({4, 3, 32, 32}),
                      torch::randint(5, 50, {4, 8}, torch::kLong), torch::ones({4}, torch::kBool),
                      torch::ones({4}, torch::kBool)};
  auto one = dist::Comm::single();
  const auto l = task.forward_loss(b, *one);
  EXPECT_TRUE(l.total.requires_grad());
  const auto s = run_task(task, {b});
  EXPECT_NEAR(l.total.item<double>(), s.total.item<double>(), 1e-6);
  for (model::Level lv : model::kLevels)
    EXPECT_NEAR(l.loss[lv].item<double>(), s.loss[lv].item<double>(), 1e-6);
  // after_update clamps the logit scales.
  {
    torch::NoGradGuard ng;
    net->logit_scale_of(model::Level::kLeft).fill_(9.0);
  }
  task.after_update();
  EXPECT_FLOAT_EQ(net->logit_scale_of(model::Level::kLeft).item<float>(), 4.6f);
}
