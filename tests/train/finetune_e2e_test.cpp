// `retclip finetune` and `retclip predict` through the binary: an interrupted fine-tune
// (SIGKILL after a step) resumes bit-exactly on CPU; the classifier export loaded into
// open_clip's VisionTransformer + torch.nn.Linear reproduces `retclip predict` within
// 1e-5 (tests/python/finetune_oracle.py); odir-sample end to end (skipped when absent).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "../support/e2e.hpp"
#include "../support/finetune.hpp"
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
