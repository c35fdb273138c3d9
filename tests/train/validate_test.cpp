// Tests of validation over a split: per-level losses equal the loss function's on the
// same batches, all six accuracies and three recalls are reported, the patient limit is
// honoured, eye recall counts only present eyes, and train mode is restored.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "retclip/model/presets.hpp"
#include "retclip/train/validate.hpp"

using namespace retclip;

namespace {

model::RetClip micro_model_from_config() {
  config::ModelConfig mc;
  mc.vision.preset = "vit-micro";
  mc.text.preset = "bert-micro";
  torch::manual_seed(3);
  return model::RetClip(model::retclip_options(mc, 50));
}

std::vector<train::MicroBatch> batches(int n, int64_t b) {
  torch::manual_seed(4);
  std::vector<train::MicroBatch> out;
  for (int i = 0; i < n; ++i)
    out.push_back({torch::randn({b, 3, 32, 32}), torch::randn({b, 3, 32, 32}),
                   torch::randint(1, 50, {b, 12}, torch::kLong),
                   torch::arange(b).remainder(3).ne(0),  // every third left eye missing
                   torch::ones({b}, torch::kBool)});
  return out;
}

train::BatchSource source(const std::vector<train::MicroBatch>& bs) {
  auto i = std::make_shared<size_t>(0);
  return [bs, i](train::MicroBatch* out) {
    if (*i >= bs.size()) return false;
    *out = bs[(*i)++];
    return true;
  };
}

}  // namespace

TEST(Validate, LevelsEqualTheLossAndRecallCountsPresentEyes) {
  model::RetClip net = micro_model_from_config();
  net->train();
  const auto bs = batches(2, 6);
  const auto opts = loss::TripartiteLossOptions();
  train::EvalResult r = train::evaluate(net, source(bs), 12, opts, train::Precision::kFp32);
  EXPECT_TRUE(net->is_training());
  EXPECT_EQ(r.patients, 12);
  // The same numbers by hand: eval-mode forward, batch means.
  net->eval();
  torch::NoGradGuard ng;
  model::PerLevel<double> want;
  for (const auto& b : bs) {
    auto out = loss::tripartite_loss(
        net->forward(b.left, b.right, b.tokens, b.has_left, b.has_right), opts);
    for (model::Level l : model::kLevels) want[l] += out.level[l].loss.item<double>() / 2;
  }
  for (model::Level l : model::kLevels)
    EXPECT_NEAR(r.level_loss[l], want[l], 1e-6) << model::level_name(l);
  EXPECT_EQ(r.recall[model::Level::kPatient].n, 12);
  EXPECT_EQ(r.recall[model::Level::kLeft].n, 8);  // 4 of 12 left eyes are missing
  EXPECT_EQ(r.recall[model::Level::kRight].n, 12);
  auto m = r.metrics();
  for (const char* key : {"val/acc_patient_i2t", "val/acc_left_t2i", "val/acc_right_i2t",
                          "val/loss_left", "val/right_t2i_r@5", "val/patient_i2t_r@1"})
    EXPECT_EQ(m.count(key), 1u) << key;
  EXPECT_NE(r.to_string().find("left"), std::string::npos);
}

TEST(Validate, StopsAtTheLimit) {
  model::RetClip net = micro_model_from_config();
  train::EvalResult r = train::evaluate(net, source(batches(3, 6)), 8,
                                        loss::TripartiteLossOptions(), train::Precision::kFp32);
  EXPECT_EQ(r.patients, 8);  // 6 + 2 of the second batch; the third is never read
  EXPECT_EQ(r.recall[model::Level::kPatient].n, 8);
}
