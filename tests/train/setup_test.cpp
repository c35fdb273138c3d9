// Tests of the run's model set-up: the same seed gives the same weights, ranks above 0
// draw their own dropout stream afterwards, and train.freeze.* freezes what it names.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "retclip/config/config.hpp"
#include "retclip/train/setup.hpp"

using namespace retclip;

namespace {

config::Config micro_config(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets{"model.vision.preset=vit-micro", "model.text.preset=bert-micro",
                                "model.embed_dim=0", "data.image_size=32"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return config::load("", sets);
}

}  // namespace

TEST(Setup, SameSeedSameWeightsAndRankStreamsDiffer) {
  auto cfg = micro_config();
  model::RetClip a = train::build_model(cfg, 50, at::kCPU, 0);
  const at::Tensor after_rank0 = torch::rand({3});
  model::RetClip b = train::build_model(cfg, 50, at::kCPU, 1);
  const at::Tensor after_rank1 = torch::rand({3});
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(p.value().equal(pb[p.key()])) << p.key();
  EXPECT_TRUE(a->is_training());
  EXPECT_FALSE(after_rank0.equal(after_rank1));
}

TEST(Setup, FreezeNamesWhatItFreezes) {
  auto cfg = micro_config({"train.freeze.text=true", "train.freeze.vision_blocks=1"});
  model::RetClip net = train::build_model(cfg, 50, at::kCPU, 0);
  int64_t frozen_text = 0, trainable_text = 0;
  for (const auto& p : net->named_parameters()) {
    const std::string& k = p.key();
    const bool trains = p.value().requires_grad();
    if (k.rfind("bert.", 0) == 0) (trains ? trainable_text : frozen_text)++;
    if (k.rfind("visual.transformer.resblocks.0.", 0) == 0 || k == "visual.conv1.weight") {
      EXPECT_FALSE(trains) << k;
    }
    if (k.rfind("visual.transformer.resblocks.1.", 0) == 0 || k.rfind("text_projection", 0) == 0) {
      EXPECT_TRUE(trains) << k;
    }
  }
  EXPECT_GT(frozen_text, 0);
  EXPECT_EQ(trainable_text, 0);
}
