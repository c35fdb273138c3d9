// Tests of the run's model set-up: the same seed gives the same weights, ranks above 0
// draw their own dropout stream afterwards, and train.freeze.* freezes what it names.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "retclip/config/config.hpp"
#include "retclip/io/safetensors.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/util/error.hpp"

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

TEST(Setup, RequiredInitStopsWithoutFilesAndNoneOptsIn) {
  auto cfg = micro_config({"model.init.required=true"});
  try {
    train::build_model(cfg, 50, at::kCPU, 0);
    ADD_FAILURE() << "expected a UsageError";
  } catch (const UsageError& e) {
    const std::string m = e.what();
    for (const char* k : {"model.init.vision", "model.init.text", "model.init.full", "HINT:"})
      EXPECT_NE(m.find(k), std::string::npos) << k << " not in: " << m;
  }
  auto none = micro_config({"model.init.required=true", "model.init.vision=none"});
  EXPECT_NO_THROW(train::build_model(none, 50, at::kCPU, 0));
  EXPECT_NO_THROW(train::build_model(micro_config(), 50, at::kCPU, 0));  // not required
}

TEST(Setup, ClipInitImportsThePatientLogitScale) {
  auto cfg = micro_config();
  model::RetClip src = train::build_model(cfg, 50, at::kCPU, 0);
  io::TensorList clip;
  for (const auto& p : src->named_parameters())
    if (p.key().rfind("visual.", 0) == 0) clip.emplace_back(p.key(), p.value().detach() * 0.5);
  clip.emplace_back("logit_scale", torch::tensor(3.25f));
  const auto path = std::filesystem::temp_directory_path() / "retclip_setup_clip.safetensors";
  io::write_safetensors(path, clip);
  auto with = micro_config({"model.init.vision=" + path.string()});
  model::RetClip net = train::build_model(with, 50, at::kCPU, 0);
  std::filesystem::remove(path);
  EXPECT_FLOAT_EQ(net->logit_scale.item<float>(), 3.25f);
  // The eye levels keep model.logit_scale_init; the visual weights are the file's.
  EXPECT_NEAR(net->logit_scale_left.item<double>(), cfg.model.logit_scale_init, 1e-6);
  auto p = net->named_parameters();
  for (const auto& [k, v] : clip)
    if (k != "logit_scale") EXPECT_TRUE(p[k].equal(v)) << k;
}
