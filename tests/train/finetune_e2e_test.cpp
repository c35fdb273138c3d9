// `retclip finetune` and `retclip predict` through the binary: an interrupted fine-tune
// (SIGKILL after a step) resumes bit-exactly on CPU; the classifier export loaded into
// open_clip's VisionTransformer + torch.nn.Linear reproduces `retclip predict` within
// 1e-5 (tests/python/finetune_oracle.py); odir-sample end to end (skipped when absent).
// Zero-shot-initialised heads (finetune.head_init=zeroshot) from a 2-step pretraining's
// export: at step 0 the classifier predicts what `retclip zeroshot` scores, a short
// fine-tune from there exports a classifier `retclip predict` (and the oracle) reads, and
// the refusals.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "../support/e2e.hpp"
#include "../support/finetune.hpp"
#include "retclip/data/loader.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/eval/predict.hpp"
#include "retclip/eval/zeroshot.hpp"
#include "retclip/train/finetune.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using retclip::test::retclip_bin;
using retclip::test::run_logged;
using retclip::util::read_file;

namespace {

// vit-micro at 32 px, eye level, every random part of the recipe on (augmentation,
// drop-path, mixup / cutmix, label smoothing).
std::string finetune_args(const fs::path& data, const fs::path& dir) {
  return " finetune --set model.vision.preset=vit-micro --set model.text.preset=bert-micro"
         " --set data.image_size=32 --set finetune.data=" +
         data.string() +
         " --set finetune.level=eye --set finetune.epochs=3 --set finetune.batch_size=16"
         " --set finetune.warmup_epochs=1 --set finetune.blr=0.05 --set finetune.mixup=0.8"
         " --set finetune.cutmix=1.0 --set train.device=cpu --set train.threads=1"
         " --set data.workers=2 --set log.tensorboard=false --set checkpoint.every_steps=2"
         " --set log.dir=" +
         dir.string();
}

}  // namespace

TEST(FinetuneE2E, InterruptedRunResumesBitExactly) {
  const fs::path root = retclip::test::fresh_dir("finetune_e2e", "resume");
  const fs::path log = root / "log.txt";
  const fs::path data = retclip::test::synth_labelled(root, 40);
  const std::string bin = "OMP_NUM_THREADS=1 " + retclip_bin();
  ASSERT_EQ(run_logged(bin + finetune_args(data, root / "a"), log), 0) << read_file(log);
  // Killed right after step 3 (mid epoch 2); the newest checkpoint is step 2.
  ASSERT_EQ(
      run_logged(bin + finetune_args(data, root / "b"), log, "RETCLIP_FAULT_KILL_AFTER_STEP=3"),
      128 + 9)
      << read_file(log);
  EXPECT_FALSE(fs::exists(root / "b" / "results.json"));
  ASSERT_EQ(run_logged(bin + finetune_args(data, root / "b") + " --resume auto", log), 0)
      << read_file(log);
  EXPECT_NE(read_file(log).find("resumed from"), std::string::npos);
  EXPECT_EQ(read_file(root / "a" / "classifier" / "classifier.safetensors"),
            read_file(root / "b" / "classifier" / "classifier.safetensors"))
      << "the resumed run's weights differ from the uninterrupted run's";
  const json a = json::parse(read_file(root / "a" / "results.json"));
  const json b = json::parse(read_file(root / "b" / "results.json"));
  for (const char* k : {"selection", "val", "test", "thresholds"}) EXPECT_EQ(a.at(k), b.at(k)) << k;
  std::printf("resume: classifier weights and results identical (chosen epoch %lld)\n",
              static_cast<long long>(a.at("selection").at("chosen_epoch").get<int64_t>()));

  // The export in PyTorch: open_clip VisionTransformer + Linear, from the files alone.
  if (std::system("python3 -c 'import torch, safetensors, open_clip' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with torch, safetensors and open_clip not available";
  ASSERT_EQ(
      run_logged(bin + " predict --weights " + (root / "a" / "classifier").string() +
                     " --manifest " + data.string() + " --out " + (root / "probs.csv").string() +
                     " --device cpu --save-inputs " + (root / "inputs.safetensors").string(),
                 log),
      0)
      << read_file(log);
  const fs::path oracle_log = root / "oracle.log";
  EXPECT_EQ(run_logged("python3 " RETCLIP_SOURCE_DIR "/tests/python/finetune_oracle.py " +
                           (root / "a" / "classifier").string() + " " +
                           (root / "inputs.safetensors").string() + " " +
                           (root / "probs.csv").string() + " 1e-5",
                       oracle_log),
            0)
      << read_file(oracle_log);
  std::printf("%s", read_file(oracle_log).c_str());
}

TEST(FinetuneE2E, OdirSamplePatientLevel) {
  const fs::path src = fs::path(RETCLIP_SOURCE_DIR) / ".." / "shared" / "data" / "odir-sample";
  if (!fs::exists(src / "labels.csv")) GTEST_SKIP() << "no ../shared/data/odir-sample";
  const fs::path root = retclip::test::fresh_dir("finetune_e2e", "odir");
  const fs::path log = root / "log.txt";
  const std::string bin = "OMP_NUM_THREADS=1 " + retclip_bin();
  ASSERT_EQ(run_logged(bin +
                           " finetune --config " RETCLIP_SOURCE_DIR
                           "/configs/finetune-odir.yaml --set finetune.data=" +
                           (src / "labels.csv").string() +
                           " --set finetune.epochs=2 --set finetune.batch_size=8"
                           " --set model.vision.preset=vit-micro --set data.image_size=32"
                           " --set train.threads=1 --set data.workers=2 --set log.dir=" +
                           (root / "run").string(),
                       log),
            0)
      << read_file(log);
  const json r = json::parse(read_file(root / "run" / "results.json"));
  EXPECT_EQ(r.at("task"), "multi-label");
  EXPECT_EQ(r.at("level"), "patient");
  EXPECT_EQ(r.at("classes").size(), 8u);
  EXPECT_TRUE(r.at("splits").at("test_drawn").get<bool>());
  EXPECT_GT(r.at("splits").at("test").at("n").get<int64_t>(), 5);
  EXPECT_TRUE(r.at("test").contains("auroc_macro"));
  EXPECT_EQ(r.at("selection").at("history").size(), 2u);
  // predict reads a native manifest (patient_id, left_image, right_image, report).
  std::string csv = "patient_id,left_image,right_image,report\n";
  for (const auto& row : retclip::data::parse_csv(read_file(src / "labels.csv"))) {
    if (row.fields.size() < 6 || row.fields[0] == "patient_id") continue;
    csv += row.fields[0] + ",\"" + (src / row.fields[1]).string() + "\",\"" +
           (src / row.fields[2]).string() + "\",unused\n";
  }
  retclip::util::write_file_atomic(root / "manifest.csv", csv);
  ASSERT_EQ(run_logged(bin + " predict --weights " + (root / "run" / "classifier").string() +
                           " --manifest " + (root / "manifest.csv").string() + " --out " +
                           (root / "probs.csv").string() + " --device cpu",
                       log),
            0)
      << read_file(log);
  auto rows = retclip::data::parse_csv(read_file(root / "probs.csv"));
  EXPECT_EQ(rows.size(), 49u);  // header + 48 patients
  EXPECT_EQ(rows[0].fields.size(), 3u + 8u);
}

// ---- zero-shot-initialised heads ------------------------------------------------------

namespace {

const char* kSynthPrompts = RETCLIP_SOURCE_DIR "/configs/prompts/synth-findings.yaml";

/// The synthetic set's pretraining export (2 steps, vit-micro + bert-micro at 32 px, both
/// towers) and a vision-only export of it, made once for the suite.
class ZeroShotHeadE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root = retclip::test::fresh_dir("finetune_e2e", "zeroshot");
    const fs::path log = root / "log.txt";
    data = retclip::test::synth_labelled(root, 40);
    const std::string bin = "OMP_NUM_THREADS=1 " + retclip_bin(), r = root.string();
    ready = run_logged(bin + " tokenizer train --manifest " + r + "/synth/train.csv" +
                           " --vocab-size 160 --out " + r + "/tok.model",
                       log) == 0 &&
            run_logged(bin +
                           " train --config " RETCLIP_SOURCE_DIR
                           "/configs/tiny-cpu.yaml --set model.vision.preset=vit-micro"
                           " --set model.text.preset=bert-micro --set model.embed_dim=32"
                           " --set data.image_size=32 --set data.context_length=32"
                           " --set data.train=" +
                           r + "/synth/train.csv --set data.val= --set data.tokenizer.path=" + r +
                           "/tok.model --set train.steps=2 --set train.batch_size=8"
                           " --set train.threads=1 --set data.workers=1 --set log.dir=" +
                           r + "/pretrain",
                       log) == 0 &&
            run_logged(bin + " export --checkpoint " + r + "/pretrain/checkpoints --out " + r +
                           "/export --parts full",
                       log) == 0 &&
            run_logged(bin + " export --checkpoint " + r + "/pretrain/checkpoints --out " + r +
                           "/export-vision --parts vision",
                       log) == 0;
    if (!ready) std::printf("%s", read_file(log).c_str());
  }
  void SetUp() override { ASSERT_TRUE(ready) << "the pretraining export failed"; }

  /// A fine-tuning config from the export with a zero-shot head.
  static retclip::config::Config config(const fs::path& set, const std::string& level,
                                        const std::vector<std::string>& classes,
                                        const std::string& prompts,
                                        const std::string& init = "export") {
    std::string list;
    for (const auto& c : classes) list += (list.empty() ? "" : ",") + c;
    return retclip::config::load_string(
        "finetune:\n  classes: [" + list + "]\n", "zs.yaml",
        {"data.image_size=32", "finetune.data=" + set.string(), "finetune.level=" + level,
         "finetune.feature=post_proj", "finetune.head_init=zeroshot", "finetune.prompts=" + prompts,
         "finetune.init=" + (root / init).string(), "train.device=cpu", "train.threads=1",
         "data.workers=1", "log.tensorboard=false", "log.dir=" + (root / "unused").string()});
  }

  static inline fs::path root, data;
  static inline bool ready = false;
};

std::vector<std::string> prompt_classes(const std::string& path) {
  return retclip::eval::load_prompts(path).classes;
}

/// Logits [N, C] of every item of `set` through the loader that zero-shot's features use.
at::Tensor classifier_logits(retclip::model::Classifier& net, const retclip::config::Config& cfg,
                             const retclip::data::LabelledSet& set) {
  using namespace retclip;
  const auto& dc = cfg.data;
  data::Loader loader(eval::make_item_source(set.items, set.level, dc.image_size, dc.context_length,
                                             dc.max_image_pixels),
                      nullptr,
                      eval::inference_loader_options(dc, 16, 1, at::Device(at::kCPU),
                                                     data::BadSamplePolicy::kFail));
  net->eval();
  torch::NoGradGuard ng;
  std::vector<at::Tensor> rows(set.items.size());
  while (auto b = loader.next()) {
    at::Tensor z = net->forward(b->left, b->right, b->has_left, b->has_right,
                                eval::right_eye_rows(set.items, b->indices));
    for (size_t j = 0; j < b->indices.size(); ++j) rows[b->indices[j]] = z[static_cast<int64_t>(j)];
  }
  return torch::stack(rows);
}

/// Step 0 of finetune.head_init=zeroshot against eval::run_zeroshot on the same rows (the
/// test split): single-label probabilities, multi-label logit / logit scale = cosine.
double step_zero_difference(const retclip::config::Config& cfg, const fs::path& export_dir) {
  using namespace retclip;
  const data::LabelledSet set = train::read_finetune_set(cfg);
  model::Classifier net = train::build_finetune_classifier(cfg, set);
  EXPECT_TRUE(net->options().normalize());
  EXPECT_EQ(net->options().per_eye(), set.level == config::Level::kEye);
  const at::Tensor logits = classifier_logits(net, cfg, set);
  eval::Encoder enc = eval::load_encoder(export_dir);
  eval::ZeroShotOptions zo;
  zo.features.device = "cpu";
  zo.features.workers = 1;
  const eval::ZeroShotResult zs =
      eval::run_zeroshot(enc, set, eval::load_prompts(cfg.finetune.prompts), zo);
  const std::vector<int64_t> test = set.indices("test");
  EXPECT_EQ(zs.scores.size(0), static_cast<int64_t>(test.size()));
  std::vector<at::Tensor> mine;
  for (int64_t i : test) {
    const auto& it = set.items[static_cast<size_t>(i)];
    const model::Level l = set.level == config::Level::kPatient ? model::Level::kPatient
                           : it.eye == data::Eye::kRight ? model::Level::kRight
                                                         : model::Level::kLeft;
    at::Tensor z = logits[i];
    mine.push_back(set.multi_label ? z / enc.net->logit_scale_of(l).exp().item<double>()
                                   : torch::softmax(z, 0));
  }
  const double d = (torch::stack(mine) - zs.scores).abs().max().item<double>();
  std::printf(
      "step 0 vs retclip zeroshot (%s level, %s, %lld rows x %lld classes): max |diff| %.3g\n",
      config::name(set.level), set.multi_label ? "multi-label, cosines" : "single-label, probabilities",
      static_cast<long long>(zs.scores.size(0)), static_cast<long long>(zs.scores.size(1)), d);
  return d;
}

}  // namespace

TEST_F(ZeroShotHeadE2E, StepZeroPredictsWhatZeroShotScores) {
  const auto classes = prompt_classes(kSynthPrompts);
  // Eye level, multi-label (the per-eye findings): left / right heads by laterality.
  EXPECT_LT(step_zero_difference(config(data, "eye", classes, kSynthPrompts), root / "export"),
            1e-5);
  // Patient level, multi-label (patient_labels): the patient head.
  EXPECT_LT(step_zero_difference(config(data, "patient", classes, kSynthPrompts), root / "export"),
            1e-5);
  // Eye level, single-label: normal / abnormal per eye, softmax of scale x cosine.
  std::string csv = "patient_id,left_image,right_image,split,left_label,right_label\n";
  for (const auto& row : retclip::data::parse_csv(read_file(data))) {
    const auto& f = row.fields;
    if (f[0] == "patient_id") continue;
    auto label = [](const std::string& image, const std::string& labels) {
      return image.empty() ? std::string() : labels == "normal" ? "normal" : "abnormal";
    };
    csv += f[0] + "," + f[1] + "," + f[2] + "," + f[6] + "," + label(f[1], f[7]) + "," +
           label(f[2], f[8]) + "\n";
  }
  retclip::util::write_file_atomic(root / "normal.csv", csv);
  retclip::util::write_file_atomic(
      root / "normal-prompts.yaml",
      "classes:\n  - name: normal\n    prompts: [\"normal fundus\", \"normal fundus; normal "
      "vessel calibre\"]\n  - name: abnormal\n    prompts: [\"diabetic retinopathy\", \"drusen "
      "at the macula\", \"glaucomatous optic disc cupping\"]\n");
  const std::string np = (root / "normal-prompts.yaml").string();
  EXPECT_LT(step_zero_difference(config(root / "normal.csv", "eye", {"normal", "abnormal"}, np),
                                 root / "export"),
            1e-5);
}

TEST_F(ZeroShotHeadE2E, RefusesInitWithoutTextTowerAndOtherClasses) {
  using namespace retclip;
  const auto classes = prompt_classes(kSynthPrompts);
  auto message = [](const config::Config& cfg) -> std::string {
    try {
      train::build_finetune_classifier(cfg, train::read_finetune_set(cfg));
    } catch (const UsageError& e) {
      return e.what();
    }
    return "no UsageError";
  };
  const std::string no_text = message(config(data, "eye", classes, kSynthPrompts, "export-vision"));
  EXPECT_NE(no_text.find("finetune.init: "), std::string::npos) << no_text;
  EXPECT_NE(no_text.find("has no text tower or tokenizer"), std::string::npos) << no_text;
  EXPECT_NE(no_text.find("HINT: retclip export --parts full"), std::string::npos) << no_text;
  // The prompt file's classes in another order than the set's.
  std::vector<std::string> swapped = classes;
  std::swap(swapped[0], swapped[1]);
  const std::string other = message(config(data, "eye", swapped, kSynthPrompts));
  EXPECT_NE(other.find("finetune.prompts: "), std::string::npos) << other;
  EXPECT_NE(other.find("HINT: the prompt file lists one entry per class"), std::string::npos)
      << other;
}

TEST_F(ZeroShotHeadE2E, FinetunesExportsAndPredicts) {
  const fs::path log = root / "finetune.log", run = root / "ft";
  const std::string bin = "OMP_NUM_THREADS=1 " + retclip_bin();
  std::string list;
  for (const auto& c : prompt_classes(kSynthPrompts)) list += (list.empty() ? "" : ", ") + c;
  retclip::util::write_file_atomic(root / "ft.yaml", "finetune:\n  classes: [" + list + "]\n");
  ASSERT_EQ(
      run_logged(bin + " finetune --config " + (root / "ft.yaml").string() +
                     " --head-init zeroshot --prompts " + kSynthPrompts + " --init " +
                     (root / "export").string() +
                     " --set finetune.feature=post_proj --set finetune.data=" + data.string() +
                     " --set finetune.level=eye --set finetune.epochs=2"
                     " --set finetune.batch_size=16 --set finetune.warmup_epochs=0.5"
                     " --set data.image_size=32 --set train.device=cpu"
                     " --set train.threads=1 --set data.workers=1 --set data.preprocess=resize"
                     " --set log.tensorboard=false --set log.dir=" +
                     run.string(),
                 log),
      0)
      << read_file(log);
  const json r = json::parse(read_file(run / "results.json"));
  EXPECT_EQ(r.at("init").at("head"), "zeroshot");
  EXPECT_EQ(r.at("init").at("prompts"), kSynthPrompts);
  const json side = json::parse(read_file(run / "classifier" / "retclip.json"));
  EXPECT_TRUE(side.at("model").at("normalize").get<bool>());
  EXPECT_TRUE(side.at("model").at("per_eye").get<bool>());
  // The run's preprocessing travels with the classifier; predict (and the oracle, which
  // reads predict's saved inputs) use it.
  EXPECT_EQ(side.at("preprocessing").at("preprocess"), "resize");
  EXPECT_FALSE(side.at("preprocessing").at("fundus_crop").get<bool>());
  ASSERT_EQ(
      run_logged(bin + " predict --weights " + (run / "classifier").string() + " --manifest " +
                     data.string() + " --out " + (root / "zs-probs.csv").string() +
                     " --device cpu --save-inputs " + (root / "zs-inputs.safetensors").string(),
                 log),
      0)
      << read_file(log);
  const auto rows = retclip::data::parse_csv(read_file(root / "zs-probs.csv"));
  EXPECT_GT(rows.size(), 60u);  // ~2 eyes x 40 patients + header
  EXPECT_EQ(rows[0].fields.size(), 3u + 12u);
  if (std::system("python3 -c 'import torch, safetensors, open_clip' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with torch, safetensors and open_clip not available";
  const fs::path oracle_log = root / "zs-oracle.log";
  EXPECT_EQ(run_logged("python3 " RETCLIP_SOURCE_DIR "/tests/python/finetune_oracle.py " +
                           (run / "classifier").string() + " " +
                           (root / "zs-inputs.safetensors").string() + " " +
                           (root / "zs-probs.csv").string() + " 1e-5",
                       oracle_log),
            0)
      << read_file(oracle_log);
  std::printf("%s", read_file(oracle_log).c_str());
}
