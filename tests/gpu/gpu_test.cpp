// CUDA checks (ctest label gpu; every test skips when no CUDA device is usable):
// CPU vs CUDA forward parity in fp32, a bf16 autocast step that stays finite and close
// to fp32, 20 bf16 steps that lower the loss, and checkpoints that move between CUDA and
// CPU (written on one, resumed on the other) through run_training.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <unistd.h>

#include <opencv2/core.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "retclip/config/config.hpp"
#include "retclip/data/shards.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/step.hpp"
#include "retclip/train/trainer.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;

namespace {

// RETCLIP_GPU_TEST_ON_CPU=1 runs every test with the CPU standing in for the GPU: it
// checks the harness on machines without CUDA (the comparisons are then trivial).
bool stand_in() {
  return std::getenv("RETCLIP_GPU_TEST_ON_CPU") != nullptr;
}
at::Device gpu() {
  return stand_in() ? at::Device(at::kCPU) : gpu();
}
std::string gpu_name() {
  return stand_in() ? "cpu" : "cuda";
}

#define REQUIRE_CUDA()                               \
  if (!stand_in() && !torch::cuda::is_available()) { \
    GTEST_SKIP() << "no CUDA device usable";         \
  }

constexpr int64_t kVocab = 500;

// The tiny preset of configs/tiny-cpu.yaml (vit-tiny 64 px + bert-tiny), text dropout 0.
config::Config tiny_config(std::vector<std::string> extra = {}) {
  std::vector<std::string> o{"model.text.vocab_size=" + std::to_string(kVocab), "train.threads=2"};
  o.insert(o.end(), extra.begin(), extra.end());
  return config::load(std::string(RETCLIP_SOURCE_DIR) + "/configs/tiny-cpu.yaml", o);
}

model::RetClip make_model(const config::Config& cfg, uint64_t seed) {
  torch::manual_seed(seed);
  return model::RetClip(model::retclip_options(cfg.model, kVocab));
}

train::MicroBatch random_batch(int64_t b, int64_t s, int64_t t, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor tokens = at::randint(1, kVocab, {b, t}, gen, at::TensorOptions().dtype(at::kLong));
  tokens.slice(1, t / 2).zero_();  // padding after half the context
  at::Tensor has_left = at::ones({b}, at::kBool), has_right = at::ones({b}, at::kBool);
  has_left[1] = false;  // one missing eye of each side
  has_right[2] = false;
  return {at::randn({b, 3, s, s}, gen, at::TensorOptions()),
          at::randn({b, 3, s, s}, gen, at::TensorOptions()), tokens, has_left, has_right};
}

train::MicroBatch to(const train::MicroBatch& m, const at::Device& d) {
  return {m.left.to(d), m.right.to(d), m.tokens.to(d), m.has_left.to(d), m.has_right.to(d)};
}

double rel_err(const at::Tensor& a, const at::Tensor& ref) {
  return (a.cpu().to(at::kDouble) - ref.cpu().to(at::kDouble)).abs().max().item<double>() /
         std::max(1e-12, ref.cpu().to(at::kDouble).abs().max().item<double>());
}

loss::TripartiteLossOptions loss_options(const config::Config& cfg) {
  return loss::TripartiteLossOptions().logit_scale_max(cfg.loss.logit_scale_max);
}

// ---- forward parity and precision --------------------------------------------------

TEST(Gpu, ForwardParityCpuCudaFp32) {
  REQUIRE_CUDA();
  // cuDNN may run the patch convolution in TF32 by default; parity is about fp32.
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  auto cfg = tiny_config();
  model::RetClip cpu = make_model(cfg, 1), dev = make_model(cfg, 1);
  dev->to(gpu());
  cpu->eval();
  dev->eval();
  auto b = random_batch(6, 64, 64, 7);
  torch::NoGradGuard ng;
  auto ec = cpu->forward(b.left, b.right, b.tokens, b.has_left, b.has_right);
  auto bg = to(b, gpu());
  auto eg = dev->forward(bg.left, bg.right, bg.tokens, bg.has_left, bg.has_right);
  const std::pair<const char*, std::pair<at::Tensor, at::Tensor>> pairs[] = {
      {"patient_img", {eg.img[model::Level::kPatient], ec.img[model::Level::kPatient]}},
      {"left_img", {eg.img[model::Level::kLeft], ec.img[model::Level::kLeft]}},
      {"right_img", {eg.img[model::Level::kRight], ec.img[model::Level::kRight]}},
      {"patient_txt", {eg.txt[model::Level::kPatient], ec.txt[model::Level::kPatient]}},
      {"left_txt", {eg.txt[model::Level::kLeft], ec.txt[model::Level::kLeft]}},
      {"right_txt", {eg.txt[model::Level::kRight], ec.txt[model::Level::kRight]}}};
  for (const auto& [name, p] : pairs) {
    const double e = rel_err(p.first, p.second);
    std::printf("forward parity %-12s max rel diff %.3g\n", name, e);
    EXPECT_LE(e, 1e-4) << name;
  }
}

TEST(Gpu, Bf16StepIsFiniteAndCloseToFp32) {
  REQUIRE_CUDA();
  const at::Device cuda = gpu();
  auto cfg = tiny_config();
  auto b = to(random_batch(16, 64, 64, 11), cuda);
  auto grads_of = [&](train::Precision p, double* loss) {
    model::RetClip net = make_model(cfg, 2);
    net->to(cuda);
    net->eval();  // no dropout: the two passes see the same function
    auto l = train::forward_backward(net, {b}, loss_options(cfg), p);
    *loss = l.total.item<double>();
    std::vector<at::Tensor> g;
    for (auto& prm : net->parameters()) g.push_back(prm.grad().detach().flatten().to(at::kFloat));
    return at::cat(g);
  };
  double l32 = 0, l16 = 0;
  at::Tensor g32 = grads_of(train::Precision::kFp32, &l32);
  at::Tensor g16 = grads_of(train::Precision::kBf16, &l16);
  std::printf("loss fp32 %.6f bf16 %.6f\n", l32, l16);
  ASSERT_TRUE(std::isfinite(l16));
  ASSERT_TRUE(at::isfinite(g16).all().item<bool>());
  EXPECT_NEAR(l16, l32, 0.03 * std::abs(l32));
  const double cos = at::cosine_similarity(g16, g32, 0).item<double>();
  std::printf("gradient cosine similarity bf16 vs fp32 %.5f\n", cos);
  EXPECT_GT(cos, 0.95);
}

TEST(Gpu, TwentyBf16StepsLowerTheLoss) {
  REQUIRE_CUDA();
  const at::Device cuda = gpu();
  auto cfg = tiny_config({"optim.lr=1e-3", "optim.weight_decay=0"});
  model::RetClip net = make_model(cfg, 3);
  net->to(cuda);
  net->train();
  auto built = train::build_adamw(*net, cfg.optim);
  auto b = to(random_batch(32, 64, 64, 13), cuda);
  std::vector<double> losses;
  for (int i = 0; i < 20; ++i) {
    built.optimizer->zero_grad(true);
    auto l = train::forward_backward(net, {b}, loss_options(cfg), train::Precision::kBf16);
    train::clip_grad_norm(train::optimizer_params(*built.optimizer), 1.0);
    built.optimizer->step();
    losses.push_back(l.total.item<double>());
  }
  std::printf("loss step 1 %.4f -> step 20 %.4f\n", losses.front(), losses.back());
  for (double l : losses) ASSERT_TRUE(std::isfinite(l));
  EXPECT_LT(losses.back(), 0.8 * losses.front());
}

// ---- checkpoints across devices ------------------------------------------------------

class GpuCheckpoint : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!stand_in() && !torch::cuda::is_available()) return;
    root_ = fs::temp_directory_path() / ("retclip-gpu-" + std::to_string(getpid()));
    fs::create_directories(root_);
    // Shards without image decoding (this test also runs in builds without imgcodecs):
    // random 32 px pixels and random token ids, packed through the hooks.
    std::vector<data::Sample> samples;
    for (int i = 0; i < 48; ++i) {
      data::Sample s;
      s.patient_id = "p" + std::to_string(i);
      s.left.path = s.patient_id + "-left";
      s.right.path = s.patient_id + "-right";
      s.report = "report " + std::to_string(i);
      s.origin = "gpu_test row " + std::to_string(i);
      samples.push_back(s);
    }
    data::PackOptions po;
    po.out = (root_ / "shards").string();
    po.image_size = 32;
    po.context_length = 32;
    po.threads = 1;
    po.progress = false;
    data::PackHooks hooks;
    hooks.prepare_image = [](const data::ImageRef& ref, const std::string&) {
      cv::Mat m(32, 32, CV_8UC3);
      cv::theRNG().state = std::hash<std::string>{}(ref.path);
      cv::randu(m, 0, 255);
      return m;
    };
    hooks.encode_text = [](const std::string& text) {
      std::vector<int64_t> ids(32, 0);
      for (size_t i = 0; i < 16; ++i)
        ids[i] = 1 + (std::hash<std::string>{}(text) + 7 * i) % (kVocab - 1);
      return ids;
    };
    data::pack_samples(samples, po, hooks);
  }
  static void TearDownTestSuite() {
    if (!root_.empty() && !::testing::Test::HasFailure()) util::remove_tree(root_);
  }

  // A run of `steps` steps on `device` into `dir`, resuming from the newest checkpoint.
  static train::TrainSummary run_steps(const fs::path& dir, const std::string& device, int steps) {
    auto cfg = config::load(std::string(RETCLIP_SOURCE_DIR) + "/configs/tiny-cpu.yaml",
                            {"model.vision.preset=vit-micro",
                             "model.text.preset=bert-micro",
                             "model.embed_dim=0",
                             "model.text.vocab_size=" + std::to_string(kVocab),
                             "data.image_size=32",
                             "data.context_length=32",
                             "data.train=" + (root_ / "shards").string(),
                             "data.val=",
                             "train.batch_size=8",
                             "train.steps=" + std::to_string(steps),
                             "train.threads=2",
                             "train.device=" + device,
                             "train.precision=fp32",
                             "data.workers=1",
                             "optim.warmup_steps=1",
                             "checkpoint.every_steps=2",
                             "checkpoint.resume=auto",
                             "log.interval=1",
                             "log.tensorboard=false",
                             "log.dir=" + dir.string()});
    return train::run_training(cfg, {});
  }

  static double last_loss(const fs::path& dir) {
    std::ifstream in(dir / "metrics.jsonl");
    double loss = NAN;
    for (std::string line; std::getline(in, line);) {
      auto k = line.find("\"train/loss\":");
      if (k != std::string::npos) loss = std::stod(line.substr(k + 13));
    }
    return loss;
  }

  static fs::path root_;
};
fs::path GpuCheckpoint::root_;

TEST_F(GpuCheckpoint, WrittenOnCudaResumesOnCpu) {
  REQUIRE_CUDA();
  const fs::path dir = root_ / "cuda-then-cpu";
  EXPECT_EQ(run_steps(dir, gpu_name(), 4).end_step, 4);
  if (!stand_in()) {
    EXPECT_TRUE(fs::exists(dir / "checkpoints" / "step-00000004" / "rng_cuda.bin"));
  }
  auto s = run_steps(dir, "cpu", 6);
  EXPECT_EQ(s.start_step, 4);
  EXPECT_EQ(s.end_step, 6);
  EXPECT_TRUE(std::isfinite(last_loss(dir)));
}

TEST_F(GpuCheckpoint, WrittenOnCpuResumesOnCuda) {
  REQUIRE_CUDA();
  const fs::path dir = root_ / "cpu-then-cuda";
  EXPECT_EQ(run_steps(dir, "cpu", 4).end_step, 4);
  auto s = run_steps(dir, gpu_name(), 6);
  EXPECT_EQ(s.start_step, 4);
  EXPECT_EQ(s.end_step, 6);
  EXPECT_TRUE(std::isfinite(last_loss(dir)));
}

TEST_F(GpuCheckpoint, CudaRunMatchesCpuRunClosely) {
  REQUIRE_CUDA();
  // Same data order and initial weights: 4 fp32 steps on each device end near each other.
  at::globalContext().setAllowTF32CuDNN(false);
  const double cpu = (run_steps(root_ / "cpu-only", "cpu", 4), last_loss(root_ / "cpu-only"));
  const double gpu =
      (run_steps(root_ / "cuda-only", gpu_name(), 4), last_loss(root_ / "cuda-only"));
  std::printf("loss after 4 steps: cpu %.6f cuda %.6f\n", cpu, gpu);
  EXPECT_NEAR(cpu, gpu, 1e-3 * std::abs(cpu) + 1e-4);
}

}  // namespace
