// A fine-tuned classifier outside training: the export round trip (options, flags,
// preprocessing), the inference loop against the module's own forward, and the
// prediction CSV.
#include "retclip/eval/predict.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>

#include "retclip/data/manifest.hpp"
#include "retclip/model/presets.hpp"
#include "../support/model.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using model::Classifier;
using model::ClassifierOptions;


TEST(Classifier, ExportRoundTrip) {
  torch::manual_seed(4);
  Classifier net(test::micro_classifier("patient", "post_proj", 4, true));
  net->eval();
  const fs::path dir =
      fs::temp_directory_path() / ("classifier-test-" + std::to_string(::getpid()));
  nlohmann::json side = {{"classes", {"a", "b", "c", "d"}},
                         {"thresholds", {0.5, 0.5, 0.5, 0.5}},
                         {"preprocessing",
                          {{"image_size", net->options().vision().image_size()},
                           {"mean", {0.5, 0.5, 0.5}},
                           {"std", {0.25, 0.25, 0.25}}}}};
  eval::save_classifier(dir, net, side);
  eval::LoadedClassifier back = eval::load_classifier(dir);
  EXPECT_EQ(back.classes, (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_TRUE(back.net->options().multi_label());
  EXPECT_EQ(back.net->options().level(), model::ClassifierLevel::kPatient);
  EXPECT_DOUBLE_EQ(back.std[1], 0.25);
  const int64_t s = net->options().vision().image_size();
  at::Tensor x = torch::randn({2, 3, s, s}), y = torch::randn({2, 3, s, s});
  at::Tensor h = torch::tensor({true, true});
  EXPECT_TRUE(torch::equal(net->forward(x, y, h, h), back.net->forward(x, y, h, h)));
  // Not a classifier directory: a clear error.
  fs::remove(dir / "retclip.json");
  EXPECT_THROW(eval::load_classifier(dir), UsageError);
  util::remove_tree(dir);  // not fs::remove_all: libtorch.so carries an incompatible copy
}

TEST(Classifier, PerEyeFlagsTravelWithTheExport) {
  torch::manual_seed(5);
  ClassifierOptions o = test::micro_classifier("eye", "post_proj", 3);
  o.normalize(true).per_eye(true);
  Classifier net(o);
  net->eval();
  const int64_t s = o.vision().image_size();
  at::Tensor x = torch::randn({4, 3, s, s});
  at::Tensor is_right = torch::tensor({false, true, true, false});
  torch::NoGradGuard ng;
  at::Tensor z = net->forward(x, {}, {}, {}, is_right);
  const fs::path dir =
      fs::temp_directory_path() / ("classifier-zs-test-" + std::to_string(::getpid()));
  eval::save_classifier(
      dir, net,
      {{"classes", {"a", "b", "c"}},
       {"preprocessing",
        {{"image_size", s}, {"mean", {0.5, 0.5, 0.5}}, {"std", {0.2, 0.2, 0.2}}}}});
  eval::LoadedClassifier back = eval::load_classifier(dir);
  EXPECT_TRUE(back.net->options().normalize());
  EXPECT_TRUE(back.net->options().per_eye());
  EXPECT_TRUE(torch::equal(z, back.net->forward(x, {}, {}, {}, is_right)));
  util::remove_tree(dir);
}

TEST(Predict, CsvHasOneRowPerItemAndOptionalTargets) {
  std::vector<data::LabelledItem> items(2);
  items[0].id = "p1:left";
  items[0].patient_id = "p1";
  items[0].eye = data::Eye::kLeft;
  items[1].id = "p2";
  items[1].patient_id = "p2";
  items[1].eye = data::Eye::kBoth;
  at::Tensor p = torch::tensor({{0.25f, 0.75f}, {0.5f, 0.5f}});
  EXPECT_EQ(eval::predictions_csv(items, p, {"a", "b"}, ""),
            "id,patient_id,eye,a,b\np1:left,p1,left,0.25,0.75\np2,p2,both,0.5,0.5\n");
  at::Tensor t = torch::tensor({{0.f, 1.f}, {1.f, 0.f}});
  EXPECT_EQ(eval::predictions_csv(items, p, {"a", "b"}, "p_", t),
            "id,patient_id,eye,p_a,p_b,true_a,true_b\np1:left,p1,left,0.25,0.75,0,1\n"
            "p2,p2,both,0.5,0.5,1,0\n");
}
