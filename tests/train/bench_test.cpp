// retclip bench: the analytic FLOP count against a hand count (tiny preset) and the
// issue's ViT-B-16 + BERT-base figure, the peak-rate table, a 2-step run, and a
// fine-tuning step (--task finetune).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "retclip/config/config.hpp"
#include "retclip/data/synth.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/bench.hpp"
#include "retclip/train/flops.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

using namespace retclip;

namespace {

config::Config tiny_config(std::vector<std::string> extra = {}) {
  std::vector<std::string> o{"train.batch_size=8", "train.threads=1", "train.device=cpu",
                             "train.precision=fp32", "model.text.vocab_size=500"};
  o.insert(o.end(), extra.begin(), extra.end());
  return config::load(std::string(RETCLIP_SOURCE_DIR) + "/configs/tiny-cpu.yaml", o);
}

}  // namespace

TEST(Flops, TinyPresetMatchesHandCount) {
  // vit-tiny: 64 px, patch 8 -> 8x8 patches + CLS = 65 tokens, width 128, 4 blocks, MLP 512,
  // embed 128. bert-tiny: hidden 128, 2 layers, FFN 512, here 64 tokens.
  auto opts = model::retclip_options(tiny_config().model, 500);
  train::FlopCount f = train::count_flops(opts, 64, 32);
  const double conv = 2.0 * 64 * (3 * 8 * 8) * 128;  // 64 patches x (3·8·8 -> 128)
  const double qkv = 2.0 * 65 * 128 * 384, out = 2.0 * 65 * 128 * 128;
  const double mlp = 2.0 * 65 * 128 * 512 * 2, attn = 2.0 * 65 * 65 * 128 * 2;
  const double proj = 2.0 * 128 * 128;
  EXPECT_DOUBLE_EQ(f.vision_per_image, conv + 4 * (qkv + out + mlp + attn) + proj);
  EXPECT_DOUBLE_EQ(f.vision_per_image, 114067456.0);
  const double t_qkv = 2.0 * 64 * 128 * 384, t_out = 2.0 * 64 * 128 * 128;
  const double t_ffn = 2.0 * 64 * 128 * 512 * 2, t_attn = 2.0 * 64 * 64 * 128 * 2;
  EXPECT_DOUBLE_EQ(f.text_per_report, 2 * (t_qkv + t_out + t_ffn + t_attn));
  EXPECT_DOUBLE_EQ(f.text_per_report, 54525952.0);
  // 3 x (Linear 128->128, Linear 128->128) text heads; 256->128, 128->128 x2 image maps.
  EXPECT_DOUBLE_EQ(f.heads_per_patient,
                   3 * (2.0 * 128 * 128 * 2) + 2.0 * 256 * 128 + 2 * 2.0 * 128 * 128);
  EXPECT_DOUBLE_EQ(f.logits_per_step, 3 * 2.0 * 32 * 32 * 128);
  EXPECT_DOUBLE_EQ(f.train_per_step(),
                   3 * (32 * (2 * 114067456.0 + 54525952.0 + 327680.0) + 786432.0));
}

TEST(Flops, VitB16BertBaseIsAbout265GflopPerPatient) {
  config::ModelConfig m;  // defaults: ViT-B-16 + RoBERTa-wwm-ext-base-chinese, embed 512
  auto opts = model::retclip_options(m);
  train::FlopCount f = train::count_flops(opts, 100, 128);
  // ViT-B/16 at 224 px: 35.13 GFLOP per image forward; BERT-base at 100 tokens: 17.36.
  EXPECT_NEAR(f.vision_per_image / 1e9, 35.127, 0.001);
  EXPECT_NEAR(f.text_per_report / 1e9, 17.356, 0.001);
  EXPECT_NEAR(f.train_per_patient() / 1e9, 262.85, 0.01);
  EXPECT_NEAR(f.train_per_patient() / 1e9, 265, 265 * 0.02);  // the "about 265"
}

TEST(Flops, PeakRateTableByDeviceName) {
  EXPECT_EQ(train::peak_bf16_tflops("NVIDIA H100 80GB HBM3"), 989);
  EXPECT_EQ(train::peak_bf16_tflops("NVIDIA H100 PCIe"), 756);
  EXPECT_EQ(train::peak_bf16_tflops("NVIDIA H200"), 989);
  EXPECT_EQ(train::peak_bf16_tflops("NVIDIA A100-SXM4-80GB"), 312);
  EXPECT_EQ(train::peak_bf16_tflops("NVIDIA A10"), 125);
  EXPECT_EQ(train::peak_bf16_tflops("NVIDIA L40S"), 362);
  EXPECT_EQ(train::peak_bf16_tflops("Some Future Card"), 0);
}

TEST(Bench, TwoStepSyntheticRunGivesSaneFields) {
  train::BenchOptions o;
  o.steps = 2;
  o.warmup = 1;
  int comm_calls = 0;
  o.comm_seconds = [&] {
    ++comm_calls;
    return 0.001;
  };
  train::BenchResult r = train::run_bench(tiny_config(), o);
  EXPECT_EQ(comm_calls, 3);  // every step, warm-up included
  auto j = r.to_json();
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_EQ(j["batch"], 8);
  EXPECT_EQ(j["steps"], 2);
  EXPECT_EQ(j["image_size"], 64);
  EXPECT_EQ(j["tokens"], 64);
  EXPECT_EQ(j["memory_kind"], "rss");
  EXPECT_TRUE(j["mfu"].is_null());
  EXPECT_GT(r.step_ms, 0);
  EXPECT_GT(r.forward_ms, 0);
  EXPECT_GT(r.backward_ms, 0);
  EXPECT_GT(r.optimizer_ms, 0);
  EXPECT_GE(r.data_ms, 0);
  EXPECT_NEAR(r.comm_ms, 1.0, 1e-9);
  EXPECT_LE(r.data_ms + r.forward_ms + r.backward_ms + r.optimizer_ms, r.step_ms * 1.001);
  EXPECT_NEAR(r.patients_per_s, 1000.0 * 8 / r.step_ms, 1e-6 * r.patients_per_s);
  EXPECT_GT(r.peak_memory_gib, 0.05);
  EXPECT_GT(r.params, 1000000);
  EXPECT_TRUE(std::isfinite(r.final_loss));
  EXPECT_GT(r.final_loss, 0);
  EXPECT_NEAR(r.gflop_per_patient,
              train::count_flops(model::retclip_options(tiny_config().model, 500), 64, 8)
                      .train_per_patient() /
                  1e9,
              1e-3);
  EXPECT_GT(r.tflops_achieved, 0);
  // --peak-tflops makes MFU computable anywhere.
  o.peak_tflops = 1.0;
  o.comm_seconds = nullptr;
  train::BenchResult r2 = train::run_bench(tiny_config(), o);
  EXPECT_NEAR(r2.mfu, r2.tflops_achieved / 1.0, 1e-12);
  EXPECT_EQ(r2.comm_ms, 0);
  EXPECT_NE(r.table().find("patients/s"), std::string::npos);
}

TEST(Bench, AccumulationReportsForwardBackwardTogether) {
  train::BenchOptions o;
  o.steps = 1;
  o.warmup = 0;
  train::BenchResult r = train::run_bench(tiny_config({"optim.accum_steps=2"}), o);
  EXPECT_FALSE(r.split_forward_backward);
  EXPECT_GT(r.forward_ms, 0);
  EXPECT_EQ(r.backward_ms, 0);
}

// `--task finetune`: the fine-tuning step (ClassifierTask through train_step), here with
// gradient accumulation, on one synthetic batch of finetune.batch_size images.
TEST(Bench, TimesAFineTuningStep) {
  train::BenchOptions o;
  o.steps = 2;
  o.warmup = 1;
  o.task = "finetune";
  auto cfg = tiny_config({"finetune.batch_size=4", "finetune.accum_steps=2"});
  train::BenchResult r = train::run_bench(cfg, o);
  auto j = r.to_json();
  EXPECT_EQ(j["task"], "finetune");
  EXPECT_EQ(j["batch"], 4);
  EXPECT_EQ(j["precision"], "fp32");  // finetune.precision auto on CPU
  EXPECT_EQ(r.unit, "images");
  EXPECT_EQ(r.accum_steps, 2);
  EXPECT_FALSE(r.split_forward_backward);
  EXPECT_GT(r.step_ms, 0);
  EXPECT_GT(r.forward_ms, 0);
  EXPECT_GT(r.optimizer_ms, 0);
  ASSERT_EQ(r.losses.size(), 3u);  // warm-up included
  EXPECT_TRUE(std::isfinite(r.final_loss));
  EXPECT_GT(r.final_loss, 0);
  EXPECT_GT(r.gflop_per_patient, 0);
  EXPECT_NEAR(r.patients_per_s, 1000.0 * 4 / r.step_ms, 1e-6 * r.patients_per_s);
  EXPECT_NE(r.table().find("images/s"), std::string::npos);
  o.data = "loader";
  EXPECT_THROW(train::run_bench(cfg, o), UsageError);
  o.data = "synthetic";
  o.task = "nope";
  EXPECT_THROW(train::run_bench(cfg, o), UsageError);
}

TEST(Bench, RejectsBadOptions) {
  train::BenchOptions o;
  o.data = "nope";
  EXPECT_THROW(train::run_bench(tiny_config(), o), UsageError);
  o.data = "synthetic";
  EXPECT_THROW(train::run_bench(tiny_config({"train.precision=bf16"}), o), UsageError);
}

// `bench --data loader` is not a run: it writes nothing under log.dir (relative to the
// current directory); the bad-sample list goes to --bad-samples-dir when given.
TEST(Bench, LoaderBenchWritesNoRunDirectory) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("retclip_bench_" + std::to_string(::getpid()));
  util::remove_tree(root);
  fs::create_directories(root / "cwd");
  data::SynthOptions so;
  so.patients = 10;
  so.val = 0;
  so.size = 64;
  so.threads = 1;
  data::synth_dataset(so, (root / "data").string());
  util::write_file_atomic(root / "vocab.txt",
                          "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nleft\nright\neye\n");
  const fs::path cwd = fs::current_path();
  fs::current_path(root / "cwd");
  train::BenchOptions o;
  o.steps = 1;
  o.warmup = 0;
  o.data = "loader";
  auto cfg = tiny_config({"data.train=" + (root / "data" / "train.csv").string(),
                          "data.tokenizer.type=wordpiece",
                          "data.tokenizer.path=" + (root / "vocab.txt").string(),
                          "data.val=", "data.workers=1", "log.dir=runs/bench-run"});
  EXPECT_NO_THROW(train::run_bench(cfg, o));
  EXPECT_FALSE(fs::exists(root / "cwd" / "runs")) << "bench created log.dir runs/bench-run";
  o.bad_samples_dir = (root / "kept").string();
  EXPECT_NO_THROW(train::run_bench(cfg, o));
  EXPECT_TRUE(fs::exists(root / "kept" / "bad_samples.tsv"));
  EXPECT_FALSE(fs::exists(root / "cwd" / "runs"));
  fs::current_path(cwd);
  util::remove_tree(root);
}
