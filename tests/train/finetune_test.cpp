// The fine-tuning loop in-process on a small synthetic set (vit-micro, 32 px, CPU): epoch
// selection on validation recorded in results.json, the test split scored once with the
// chosen weights, the classifier export, `predict`, and the selection criterion.
#include "retclip/train/finetune.hpp"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "../support/e2e.hpp"
#include "../support/finetune.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/eval/predict.hpp"
#include "retclip/model/classifier.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using nlohmann::json;

namespace {

config::Config finetune_config(const fs::path& root, const fs::path& data) {
  return config::load(
      "", {"model.vision.preset=vit-micro", "model.text.preset=bert-micro", "data.image_size=32",
           "finetune.data=" + data.string(), "finetune.level=eye", "finetune.epochs=2",
           "finetune.batch_size=16", "finetune.warmup_epochs=0.5", "finetune.blr=0.05",
           "train.device=cpu", "train.threads=1", "data.workers=1", "log.tensorboard=false",
           "log.interval=1", "log.dir=" + (root / "run").string()});
}

std::set<std::string> trainable(model::Classifier& net) {
  std::set<std::string> out;
  for (const auto& p : net->named_parameters())
    if (p.value().requires_grad()) out.insert(p.key());
  return out;
}

model::ClassifierOptions micro_classifier(const std::string& feature) {
  return model::ClassifierOptions(model::vision_preset("vit-micro"), 3)
      .feature(config::parse<config::Feature>(feature, "feature"));
}

}  // namespace

TEST(Classifier, FreezeModes) {
  model::Classifier net(micro_classifier("pre_proj"));
  train::apply_classifier_freeze(net, config::parse_freeze("head-only", "freeze"));
  EXPECT_EQ(trainable(net), (std::set<std::string>{"head.weight", "head.bias"}));

  model::Classifier blocks(micro_classifier("pre_proj"));
  train::apply_classifier_freeze(blocks, config::parse_freeze("first-1-blocks", "freeze"));
  auto t = trainable(blocks);
  EXPECT_FALSE(t.count("visual.conv1.weight"));
  EXPECT_FALSE(t.count("visual.positional_embedding"));
  EXPECT_FALSE(t.count("visual.transformer.resblocks.0.attn.in_proj_weight"));
  EXPECT_TRUE(t.count("visual.transformer.resblocks.1.attn.in_proj_weight"));
  EXPECT_TRUE(t.count("visual.ln_post.weight"));
  EXPECT_TRUE(t.count("head.weight"));

  // pre_proj never uses visual.proj: it is not trained; post_proj trains everything.
  model::Classifier none(micro_classifier("pre_proj"));
  train::apply_classifier_freeze(none, config::Freeze{});
  EXPECT_EQ(trainable(none).size(), none->named_parameters().size() - 1);
  EXPECT_FALSE(trainable(none).count("visual.proj"));
  model::Classifier post(micro_classifier("post_proj"));
  EXPECT_EQ(trainable(post).size(), post->named_parameters().size());

  model::Classifier bad(micro_classifier("pre_proj"));
  EXPECT_THROW(train::apply_classifier_freeze(bad, config::parse_freeze("first-99-blocks", "freeze")),
               UsageError);
}

TEST(Finetune, SelectionScore) {
  std::map<std::string, double> m{{"f1_macro", 0.5}, {"auroc_macro", 0.8}, {"kappa", 0.2}};
  EXPECT_NEAR(train::selection_score("retfound", m, false), 0.5, 1e-12);
  EXPECT_NEAR(train::selection_score("retfound", m, true), 0.65, 1e-12);
  EXPECT_DOUBLE_EQ(train::selection_score("auroc_macro", m, false), 0.8);
  EXPECT_TRUE(std::isnan(train::selection_score("accuracy", m, false)));
}

TEST(Finetune, NeedsLabelledData) {
  const fs::path root = test::fresh_dir("finetune", "nodata");
  config::Config cfg = config::load(
      "", {"log.dir=" + (root / "run").string(), "train.device=cpu", "log.tensorboard=false"});
  EXPECT_THROW(train::run_finetune(cfg, {}), UsageError);
  EXPECT_THROW(config::load("", {"finetune.freeze=first-x-blocks"}), UsageError);
  EXPECT_THROW(config::load("", {"finetune.layer_decay=1.5"}), UsageError);
}

TEST(Finetune, SelectsOnValidationScoresTestOnceAndExports) {
  const fs::path root = test::fresh_dir("finetune", "run");
  const fs::path data = test::synth_labelled(root, 60);
  config::Config cfg = finetune_config(root, data);
  train::FinetuneSummary s = train::run_finetune(cfg, {});
  ASSERT_FALSE(s.interrupted);
  const json r = json::parse(util::read_file(root / "run" / "results.json"));
  EXPECT_EQ(r.at("task"), "multi-label");  // per-eye findings
  EXPECT_EQ(r.at("level"), "eye");
  const auto& sel = r.at("selection");
  ASSERT_EQ(sel.at("history").size(), 2u);
  // The chosen epoch is the one with the best validation score, earliest on ties.
  int64_t best = 0;
  double best_score = -1e9;
  for (const auto& h : sel.at("history"))
    if (h.at("score").is_number() && h.at("score").get<double>() > best_score) {
      best_score = h.at("score").get<double>();
      best = h.at("epoch").get<int64_t>();
    }
  EXPECT_EQ(sel.at("chosen_epoch").get<int64_t>(), best);
  EXPECT_EQ(s.best_epoch, best);
  EXPECT_NE(sel.at("reason").get<std::string>().find("highest validation"), std::string::npos);
  EXPECT_EQ(sel.at("formula"), "(f1_macro + auroc_macro) / 2");
  EXPECT_TRUE(r.at("test_scored_once").get<bool>());
  EXPECT_TRUE(r.at("test").contains("auroc_macro"));
  EXPECT_EQ(r.at("thresholds").size(), r.at("classes").size());
  // The recipe as run: lr = blr x batch / 256.
  EXPECT_NEAR(r.at("recipe").at("lr").get<double>(), 0.05 * 16 / 256, 1e-12);
  EXPECT_TRUE(fs::exists(root / "run" / "test_predictions.csv"));
  EXPECT_TRUE(fs::exists(root / "run" / "checkpoints"));

  // The export predicts every present eye of the manifest.
  eval::PredictOptions po;
  po.weights = (root / "run" / "classifier").string();
  po.manifest = data.string();
  po.out = (root / "probs.csv").string();
  po.workers = 1;
  po.device = "cpu";
  const int64_t n = eval::predict_manifest(po);
  auto rows = data::parse_csv(util::read_file(root / "probs.csv"));
  EXPECT_EQ(static_cast<int64_t>(rows.size()), n + 1);
  EXPECT_GT(n, 100);  // ~2 eyes x 60 patients
  EXPECT_EQ(rows[0].fields.size(), 3 + r.at("classes").size());
}
