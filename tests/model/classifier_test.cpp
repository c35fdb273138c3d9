// The fine-tuned classifier module: head shapes and keys per level/feature, a missing
// eye, drop-path, and the zero-shot head's normalised, per-eye forward.
#include "retclip/model/classifier.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "retclip/model/presets.hpp"
#include "../support/model.hpp"
#include "retclip/util/error.hpp"

using namespace retclip;
using model::Classifier;
using model::ClassifierOptions;


TEST(Classifier, ShapesAndKeysPerLevelAndFeature) {
  torch::manual_seed(0);
  const auto v = model::vision_preset("vit-micro");
  const int64_t s = v.image_size(), d = v.width(), e = v.embed_dim();
  at::Tensor x = torch::randn({3, 3, s, s});
  at::Tensor y = torch::randn({3, 3, s, s});
  at::Tensor hl = torch::tensor({true, false, true}), hr = torch::tensor({true, true, false});
  struct Case {
    std::string level, feature;
    int64_t dim;
    bool mapping;
  };
  for (const Case& c :
       {Case{"eye", "pre_proj", d, false}, Case{"eye", "post_proj", e, false},
        Case{"patient", "pre_proj", 2 * d, false}, Case{"patient", "post_proj", e, true}}) {
    Classifier net(test::micro_classifier(c.level, c.feature));
    EXPECT_EQ(net->options().feature_dim(), c.dim) << c.level << " " << c.feature;
    EXPECT_EQ(net->head->weight.size(1), c.dim);
    at::Tensor logits = c.level == "eye" ? net->forward(x) : net->forward(x, y, hl, hr);
    EXPECT_EQ(logits.sizes(), (at::IntArrayRef{3, 3}));
    bool has_mapping = false;
    for (const auto& p : net->named_parameters())
      has_mapping |= p.key() == "global_feature_mapping.weight";
    EXPECT_EQ(has_mapping, c.mapping) << c.level << " " << c.feature;
  }
  // A missing eye takes the present eye's feature: patient 1 (no left) equals a patient
  // whose both eyes are its right image.
  Classifier net(test::micro_classifier("patient", "pre_proj"));
  net->eval();
  at::Tensor f = net->features(x, y, hl, hr);
  at::Tensor g = net->features(y.narrow(0, 1, 1), y.narrow(0, 1, 1), torch::tensor({true}),
                               torch::tensor({true}));
  EXPECT_TRUE(torch::allclose(f[1], g[0], 1e-5, 1e-6));
}

TEST(Classifier, DropPathOnlyInTraining) {
  torch::manual_seed(3);
  at::Tensor br = torch::ones({64, 5, 4});
  EXPECT_TRUE(torch::equal(model::drop_path(br, 0.5, false), br));
  at::Tensor d = model::drop_path(br, 0.5, true);
  // Each sample is either dropped whole or scaled by 1 / (1 - p).
  at::Tensor per = d.amax({1, 2});
  EXPECT_TRUE(torch::equal(d.amin({1, 2}), per));
  EXPECT_TRUE(((per == 0) | (per == 2)).all().item<bool>());
  EXPECT_GT((per == 0).sum().item<int64_t>(), 10);
  EXPECT_GT((per == 2).sum().item<int64_t>(), 10);
  // In the ViT: eval is deterministic, training with drop-path is not.
  auto vo = model::vision_preset("vit-micro").drop_path(0.5);
  model::VisionTransformer vit(vo);
  at::Tensor x = torch::randn({2, 3, vo.image_size(), vo.image_size()});
  vit->eval();
  EXPECT_TRUE(torch::equal(vit->forward(x), vit->forward(x)));
  vit->train();
  EXPECT_FALSE(torch::equal(vit->forward(x), vit->forward(x)));
}

TEST(Classifier, NormalisedPerEyeHeadScoresEachEyeWithItsHalf) {
  torch::manual_seed(5);
  ClassifierOptions o = test::micro_classifier("eye", "post_proj", 3);
  o.normalize(true).per_eye(true);
  Classifier net(o);
  net->eval();
  const int64_t s = o.vision().image_size(), e = o.vision().embed_dim();
  EXPECT_EQ(net->head->weight.sizes(), (at::IntArrayRef{6, e}));
  at::Tensor x = torch::randn({4, 3, s, s});
  at::Tensor is_right = torch::tensor({false, true, true, false});
  torch::NoGradGuard ng;
  at::Tensor z = net->forward(x, {}, {}, {}, is_right);
  // By hand: the eye's mapping of post_proj, L2-normalised, the eye's rows of the head.
  at::Tensor f = net->visual->forward(x);
  double worst = 0;
  for (int64_t i = 0; i < 4; ++i) {
    const bool r = is_right[i].item<bool>();
    at::Tensor m = (r ? net->right_feature_mapping : net->left_feature_mapping)->forward(f[i]);
    m = m / m.norm();
    at::Tensor want = torch::matmul(net->head->weight.narrow(0, r ? 3 : 0, 3), m) +
                      net->head->bias.narrow(0, r ? 3 : 0, 3);
    worst = std::max(worst, (z[i] - want).abs().max().item<double>());
  }
  std::printf("per-eye normalised head vs by hand: max |diff| %.3g\n", worst);
  EXPECT_LT(worst, 1e-5);
  EXPECT_NEAR(net->features(x, {}, {}, {}, is_right).norm(2, {1}).sub(1).abs().max().item<double>(),
              0.0, 1e-5);
  EXPECT_THROW(net->forward(x), c10::Error);  // laterality is required
  ClassifierOptions bad = test::micro_classifier("patient", "post_proj");
  bad.per_eye(true);
  EXPECT_THROW(Classifier{bad}, UsageError);
}
