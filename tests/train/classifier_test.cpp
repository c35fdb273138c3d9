// The fine-tuned classifier: head shapes and keys per level/feature, freeze modes, label
// smoothing that changes the loss as its formula says, CE / BCE on logits, balanced class
// weights, mixup / cutmix, drop-path, the export round trip, and the zero-shot head's
// normalised, per-eye forward.
#include "retclip/train/classifier.hpp"
#include "retclip/util/fs.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using train::Classifier;
using train::ClassifierOptions;

namespace {

ClassifierOptions micro(const std::string& level, const std::string& feature, int64_t classes = 3,
                        bool multi = false) {
  ClassifierOptions o;
  o.vision = model::vision_preset("vit-micro");
  o.classes = classes;
  o.multi_label = multi;
  o.level = level;
  o.feature = feature;
  return o;
}

std::set<std::string> trainable(Classifier& net) {
  std::set<std::string> out;
  for (const auto& p : net->named_parameters())
    if (p.value().requires_grad()) out.insert(p.key());
  return out;
}

}  // namespace

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
    Classifier net(micro(c.level, c.feature));
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
  Classifier net(micro("patient", "pre_proj"));
  net->eval();
  at::Tensor f = net->features(x, y, hl, hr);
  at::Tensor g = net->features(y.narrow(0, 1, 1), y.narrow(0, 1, 1), torch::tensor({true}),
                               torch::tensor({true}));
  EXPECT_TRUE(torch::allclose(f[1], g[0], 1e-5, 1e-6));
}

TEST(Classifier, FreezeModes) {
  Classifier net(micro("eye", "pre_proj"));
  train::apply_classifier_freeze(net, "head-only");
  EXPECT_EQ(trainable(net), (std::set<std::string>{"head.weight", "head.bias"}));

  Classifier blocks(micro("eye", "pre_proj"));
  train::apply_classifier_freeze(blocks, "first-1-blocks");
  auto t = trainable(blocks);
  EXPECT_FALSE(t.count("visual.conv1.weight"));
  EXPECT_FALSE(t.count("visual.positional_embedding"));
  EXPECT_FALSE(t.count("visual.transformer.resblocks.0.attn.in_proj_weight"));
  EXPECT_TRUE(t.count("visual.transformer.resblocks.1.attn.in_proj_weight"));
  EXPECT_TRUE(t.count("visual.ln_post.weight"));
  EXPECT_TRUE(t.count("head.weight"));

  // pre_proj never uses visual.proj: it is not trained; post_proj trains everything.
  Classifier none(micro("eye", "pre_proj"));
  train::apply_classifier_freeze(none, "none");
  EXPECT_EQ(trainable(none).size(), none->named_parameters().size() - 1);
  EXPECT_FALSE(trainable(none).count("visual.proj"));
  Classifier post(micro("eye", "post_proj"));
  EXPECT_EQ(trainable(post).size(), post->named_parameters().size());

  Classifier bad(micro("eye", "pre_proj"));
  EXPECT_THROW(train::apply_classifier_freeze(bad, "first-99-blocks"), UsageError);
  EXPECT_THROW(train::apply_classifier_freeze(bad, "last-2-blocks"), UsageError);
}

TEST(Classifier, LabelSmoothingChangesTheLossAsItsFormulaSays) {
  torch::manual_seed(1);
  at::Tensor logits = torch::randn({4, 5});
  at::Tensor y = torch::tensor({0, 3, 4, 1}, torch::kLong);
  at::Tensor onehot = torch::one_hot(y, 5).to(torch::kFloat);
  // No smoothing: exactly cross-entropy on logits (no softmax before CE).
  at::Tensor plain = train::classification_loss(logits, onehot, false);
  EXPECT_NEAR(plain.item<double>(), torch::nn::functional::cross_entropy(logits, y).item<double>(),
              1e-6);
  // Smoothing 0.1: (1 - e) CE + e * mean over classes of -log p, timm's formula.
  at::Tensor t = train::smooth_targets(onehot, 0.1, false);
  EXPECT_NEAR(t[0][0].item<double>(), 0.9 + 0.1 / 5, 1e-7);
  EXPECT_NEAR(t[0][1].item<double>(), 0.1 / 5, 1e-7);
  at::Tensor lsm = torch::log_softmax(logits, 1);
  const double expected =
      (0.9 * -lsm.gather(1, y.unsqueeze(1)).squeeze(1) - 0.1 * lsm.mean(1)).mean().item<double>();
  at::Tensor smoothed = train::classification_loss(logits, t, false);
  EXPECT_NEAR(smoothed.item<double>(), expected, 1e-6);
  EXPECT_GT(std::abs(smoothed.item<double>() - plain.item<double>()), 1e-3);
  // Multi-label: targets t (1 - e) + e / 2 into BCE with logits.
  at::Tensor m = torch::tensor({{1.f, 0.f}, {0.f, 1.f}});
  EXPECT_TRUE(torch::allclose(train::smooth_targets(m, 0.2, true),
                              torch::tensor({{0.9f, 0.1f}, {0.1f, 0.9f}})));
  at::Tensor z = torch::randn({2, 2});
  EXPECT_NEAR(train::classification_loss(z, m, true).item<double>(),
              torch::nn::functional::binary_cross_entropy_with_logits(z, m).item<double>(), 1e-6);
}

TEST(Classifier, ClassWeights) {
  // Single-label: n / (C' n_c); class weights scale each row's CE.
  at::Tensor t = torch::one_hot(torch::tensor({0, 0, 0, 1}, torch::kLong), 3).to(torch::kFloat);
  at::Tensor w = train::balanced_class_weights(t, false);
  EXPECT_NEAR(w[0].item<double>(), 4.0 / (2 * 3), 1e-6);
  EXPECT_NEAR(w[1].item<double>(), 4.0 / (2 * 1), 1e-6);
  EXPECT_NEAR(w[2].item<double>(), 1.0, 1e-6);  // absent class
  at::Tensor logits = torch::randn({4, 3});
  at::Tensor y = torch::tensor({0, 0, 0, 1}, torch::kLong);
  at::Tensor per_row = torch::nn::functional::cross_entropy(
      logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  EXPECT_NEAR(train::classification_loss(logits, t, false, w).item<double>(),
              (per_row * w.index_select(0, y)).mean().item<double>(), 1e-6);
  // Multi-label: pos_weight n_neg / n_pos.
  at::Tensor m = torch::tensor({{1.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {1.f, 0.f}});
  at::Tensor pw = train::balanced_class_weights(m, true);
  EXPECT_NEAR(pw[0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(pw[1].item<double>(), 1.0, 1e-6);  // no positives
}

TEST(Classifier, MixupAndCutmix) {
  torch::manual_seed(2);
  at::Tensor x = torch::randn({4, 3, 8, 8});
  at::Tensor t = torch::one_hot(torch::tensor({0, 1, 2, 1}, torch::kLong), 3).to(torch::kFloat);
  auto a = train::mix_batch(x, {}, t, 0.8, 0.0, 5), b = train::mix_batch(x, {}, t, 0.8, 0.0, 5);
  EXPECT_TRUE(torch::equal(a.left, b.left));  // every draw from the seed
  EXPECT_FALSE(a.cutmix);
  EXPECT_GT(a.lam, 0.0);
  EXPECT_LT(a.lam, 1.0);
  EXPECT_TRUE(torch::allclose(a.left, x * a.lam + x.flip(0) * (1 - a.lam)));
  EXPECT_TRUE(torch::allclose(a.targets.sum(1), torch::ones({4})));
  auto c = train::mix_batch(x, x, t, 0.0, 1.0, 9);
  EXPECT_TRUE(c.cutmix);
  // lam is the share of pixels kept from the row itself.
  const double kept = (c.left == x).to(torch::kFloat).mean().item<double>();
  EXPECT_NEAR(kept, c.lam, 1e-6);
  EXPECT_TRUE(torch::allclose(c.targets, t * c.lam + t.flip(0) * (1 - c.lam)));
  auto off = train::mix_batch(x, {}, t, 0.0, 0.0, 1);
  EXPECT_TRUE(torch::equal(off.left, x));
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

TEST(Classifier, ExportRoundTrip) {
  torch::manual_seed(4);
  Classifier net(micro("patient", "post_proj", 4, true));
  net->eval();
  const fs::path dir =
      fs::temp_directory_path() / ("classifier-test-" + std::to_string(::getpid()));
  nlohmann::json side = {{"classes", {"a", "b", "c", "d"}},
                         {"thresholds", {0.5, 0.5, 0.5, 0.5}},
                         {"preprocessing",
                          {{"image_size", net->options().vision.image_size()},
                           {"mean", {0.5, 0.5, 0.5}},
                           {"std", {0.25, 0.25, 0.25}}}}};
  train::save_classifier(dir, net, side);
  train::LoadedClassifier back = train::load_classifier(dir);
  EXPECT_EQ(back.classes, (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_TRUE(back.net->options().multi_label);
  EXPECT_EQ(back.net->options().level, "patient");
  EXPECT_DOUBLE_EQ(back.std[1], 0.25);
  const int64_t s = net->options().vision.image_size();
  at::Tensor x = torch::randn({2, 3, s, s}), y = torch::randn({2, 3, s, s});
  at::Tensor h = torch::tensor({true, true});
  EXPECT_TRUE(torch::equal(net->forward(x, y, h, h), back.net->forward(x, y, h, h)));
  // Not a classifier directory: a clear error.
  fs::remove(dir / "retclip.json");
  EXPECT_THROW(train::load_classifier(dir), UsageError);
  util::remove_tree(dir);  // not fs::remove_all: libtorch.so carries an incompatible copy
}

TEST(Classifier, NormalisedPerEyeHeadScoresEachEyeWithItsHalf) {
  torch::manual_seed(5);
  ClassifierOptions o = micro("eye", "post_proj", 3);
  o.normalize = true;
  o.per_eye = true;
  Classifier net(o);
  net->eval();
  const int64_t s = o.vision.image_size(), e = o.vision.embed_dim();
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
  ClassifierOptions bad = micro("patient", "post_proj");
  bad.per_eye = true;
  EXPECT_THROW(Classifier{bad}, UsageError);
  // The flags travel with the export.
  const fs::path dir =
      fs::temp_directory_path() / ("classifier-zs-test-" + std::to_string(::getpid()));
  train::save_classifier(
      dir, net,
      {{"classes", {"a", "b", "c"}},
       {"preprocessing",
        {{"image_size", s}, {"mean", {0.5, 0.5, 0.5}}, {"std", {0.2, 0.2, 0.2}}}}});
  train::LoadedClassifier back = train::load_classifier(dir);
  EXPECT_TRUE(back.net->options().normalize);
  EXPECT_TRUE(back.net->options().per_eye);
  EXPECT_TRUE(torch::equal(z, back.net->forward(x, {}, {}, {}, is_right)));
  util::remove_tree(dir);
}
