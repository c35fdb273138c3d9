// Gradient accumulation with full-batch negatives: k micro-batches give the gradients
// of one pass over the whole batch (every parameter, logit scales included).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "retclip/model/presets.hpp"
#include "retclip/train/step.hpp"

using namespace retclip;

namespace {

model::RetClip micro_model() {
  torch::manual_seed(5);
  auto o = model::RetClipOptions();
  o.vision(model::vision_preset("vit-micro"));
  o.text(model::text_preset("bert-micro", 50).hidden_dropout(0).attention_dropout(0));
  o.embed_dim(o.vision().embed_dim());
  return model::RetClip(o);
}

train::MicroBatch random_batch(int64_t B) {
  torch::manual_seed(9);
  auto tokens = torch::randint(5, 50, {B, 12}, torch::kLong);
  tokens.index_put_({torch::indexing::Slice(), torch::indexing::Slice(8, torch::indexing::None)},
                    0);
  auto has_left = torch::ones({B}, torch::kBool), has_right = torch::ones({B}, torch::kBool);
  has_left[2] = false;   // a patient without a left eye
  has_right[5] = false;  // and one without a right eye
  return {torch::randn({B, 3, 32, 32}), torch::randn({B, 3, 32, 32}), tokens, has_left, has_right};
}

std::map<std::string, torch::Tensor> grads_of(model::RetClip& net) {
  std::map<std::string, torch::Tensor> g;
  for (auto& p : net->named_parameters())
    if (p.value().grad().defined()) g[p.key()] = p.value().grad().clone();
  return g;
}

}  // namespace

TEST(Accumulate, MicroBatchesGiveFullBatchGradients) {
  auto net = micro_model();
  auto batch = random_batch(8);
  loss::TripartiteLossOptions opts;

  net->zero_grad();
  auto full = train::forward_backward(net, {batch}, opts, train::Precision::kFp32);
  auto g_full = grads_of(net);

  for (int64_t k : {2, 4}) {
    net->zero_grad();
    auto acc =
        train::forward_backward(net, train::split_batch(batch, k), opts, train::Precision::kFp32);
    auto g_acc = grads_of(net);
    EXPECT_NEAR(acc.total.item<double>(), full.total.item<double>(), 1e-5);
    ASSERT_EQ(g_acc.size(), g_full.size());
    double worst = 0;
    std::string worst_name;
    for (auto& [name, g] : g_full) {
      double d = (g_acc.at(name) - g).abs().max().item<double>();
      double scale = std::max(1.0, g.abs().max().item<double>());
      if (d / scale > worst) worst = d / scale, worst_name = name;
    }
    std::printf("accum k=%lld: max relative |grad diff| %.3e (%s), %zu tensors\n",
                static_cast<long long>(k), worst, worst_name.c_str(), g_full.size());
    EXPECT_LT(worst, 1e-5) << worst_name;
  }
}

TEST(Accumulate, DuplicateReportsAsPositivesAccumulateToFullBatch) {
  auto net = micro_model();
  auto batch = random_batch(8);
  // Rows 0, 3 and 6 share one report, rows 1 and 7 another: in different micro-batches.
  batch.tokens[3] = batch.tokens[0];
  batch.tokens[6] = batch.tokens[0];
  batch.tokens[7] = batch.tokens[1];
  auto ids = train::report_ids(batch.tokens);
  EXPECT_EQ(ids[0].item<int64_t>(), ids[3].item<int64_t>());
  EXPECT_EQ(ids[1].item<int64_t>(), ids[7].item<int64_t>());
  EXPECT_EQ(std::get<0>(at::_unique(ids)).size(0), 5);
  auto opts = loss::TripartiteLossOptions().duplicates_positive(true);

  net->zero_grad();
  auto full = train::forward_backward(net, {batch}, opts, train::Precision::kFp32);
  auto g_full = grads_of(net);
  // Identical token rows give identical text embeddings (no dropout): their logit columns
  // (image->text) and rows (text->image) are equal, so spreading the target over them
  // leaves the loss and every parameter gradient as with one-hot targets. The switch
  // changes training only where a level's text differs while its report id is shared
  // (per-eye reports: PerEyeReportsArePositivesAtTheirEyeLevel) or under text dropout.
  net->zero_grad();
  auto neg =
      train::forward_backward(net, {batch}, loss::TripartiteLossOptions(), train::Precision::kFp32);
  EXPECT_NEAR(neg.total.item<double>(), full.total.item<double>(), 1e-5);
  auto g_neg = grads_of(net);
  for (auto& [name, g] : g_full) {
    double scale = std::max(1.0, g.abs().max().item<double>());
    EXPECT_LT((g_neg.at(name) - g).abs().max().item<double>() / scale, 1e-5) << name;
  }
  for (int64_t k : {2, 4}) {
    net->zero_grad();
    auto acc =
        train::forward_backward(net, train::split_batch(batch, k), opts, train::Precision::kFp32);
    EXPECT_NEAR(acc.total.item<double>(), full.total.item<double>(), 1e-5);
    auto g_acc = grads_of(net);
    for (auto& [name, g] : g_full) {
      double scale = std::max(1.0, g.abs().max().item<double>());
      EXPECT_LT((g_acc.at(name) - g).abs().max().item<double>() / scale, 1e-5) << name;
    }
  }
}

TEST(Accumulate, PerEyeReportsArePositivesAtTheirEyeLevel) {
  auto net = micro_model();
  auto batch = random_batch(8);
  // Every patient report differs; the left eyes of rows 0 and 5 (different micro-batches
  // when split in two) share a per-eye report, row 3's right eye has one of its own.
  batch.eye_report_id = torch::full({8, 2}, -1, torch::kLong);
  batch.eye_report_id[0][0] = 77;
  batch.eye_report_id[5][0] = 77;
  batch.eye_report_id[3][1] = 91;
  auto ids = train::level_report_ids(batch);
  const auto P = model::Level::kPatient, L = model::Level::kLeft, R = model::Level::kRight;
  EXPECT_EQ(ids[L][0].item<int64_t>(), ids[L][5].item<int64_t>());
  EXPECT_EQ(ids[L][1].item<int64_t>(), ids[P][1].item<int64_t>());  // no per-eye report
  EXPECT_EQ(ids[R][3].item<int64_t>(), 91);
  EXPECT_TRUE(at::equal(ids[R].slice(0, 4), ids[P].slice(0, 4)));

  auto opts = loss::TripartiteLossOptions().duplicates_positive(true);
  net->zero_grad();
  auto with_eyes = train::forward_backward(net, {batch}, opts, train::Precision::kFp32);
  auto g_full = grads_of(net);
  auto plain = batch;
  plain.eye_report_id = at::Tensor();
  net->zero_grad();
  auto patient_only = train::forward_backward(net, {plain}, opts, train::Precision::kFp32);
  // The patient level is untouched; the left level has one positive pair more.
  EXPECT_NEAR(with_eyes.loss[P].item<double>(), patient_only.loss[P].item<double>(), 1e-7);
  EXPECT_GT(std::abs(with_eyes.loss[L].item<double>() - patient_only.loss[L].item<double>()), 1e-5);
  EXPECT_NEAR(with_eyes.loss[R].item<double>(), patient_only.loss[R].item<double>(), 1e-7);
  // Accumulated over two micro-batches it is the full-batch loss and gradient.
  net->zero_grad();
  auto acc =
      train::forward_backward(net, train::split_batch(batch, 2), opts, train::Precision::kFp32);
  EXPECT_NEAR(acc.total.item<double>(), with_eyes.total.item<double>(), 1e-5);
  auto g_acc = grads_of(net);
  for (auto& [name, g] : g_full) {
    double scale = std::max(1.0, g.abs().max().item<double>());
    EXPECT_LT((g_acc.at(name) - g).abs().max().item<double>() / scale, 1e-5) << name;
  }
}

TEST(Accumulate, SplitBatchRejectsTooManyMicroBatches) {
  auto batch = random_batch(8);
  EXPECT_THROW(train::split_batch(batch, 9), std::exception);
  EXPECT_EQ(train::split_batch(batch, 4).size(), 4u);
  EXPECT_EQ(train::split_batch(batch, 4)[1].size(), 2);
}

