// The one loop with both tasks: a small recipe of seeded synthetic batches drives a
// ContrastiveTask (pretraining) and a ClassifierTask (fine-tuning) through run_loop and
// train_step with gradient accumulation. For each task a run stopped after 3 steps and
// resumed to 6 ends with the weights of an uninterrupted 6-step run, bit for bit, and
// only the resumed run writes TensorBoard's restart event.
#include "retclip/train/loop.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>

#include "../support/e2e.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/metrics.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/train/task.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;

namespace {

enum class Kind { kPretrain, kFinetune };

/// Batches drawn from a generator seeded by the step (never the global one, whose state
/// the checkpoint carries for dropout); a constant lr; a checkpoint every 2 steps.
class TestRecipe : public train::Recipe {
 public:
  TestRecipe(int64_t total, Kind kind) : total_(total), kind_(kind) {}
  std::string describe() const override { return fmt::format("test: {} steps", total_); }
  int64_t steps_per_epoch() const override { return 2; }
  int64_t total_steps() const override { return total_; }
  double lr(int64_t) const override { return 1e-3; }
  train::MicroBatch next_batch(int64_t step) override {
    ++batches_;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + step);
    auto f = at::TensorOptions().dtype(at::kFloat);
    train::MicroBatch b;
    b.left = at::randn({4, 3, 32, 32}, gen, f);
    b.right = at::randn({4, 3, 32, 32}, gen, f);
    b.has_left = b.has_right = at::ones({4}, at::kBool);
    if (kind_ == Kind::kPretrain)
      b.tokens = at::randint(5, 50, {4, 8}, gen, at::TensorOptions().dtype(at::kLong));
    else
      b.targets = at::one_hot(at::randint(0, 3, {4}, gen, at::TensorOptions().dtype(at::kLong)), 3)
                      .to(at::kFloat);
    return b;
  }
  nlohmann::json state() const override { return {{"batches", batches_}}; }
  void restore(const nlohmann::json& s) override { batches_ = s.at("batches").get<int64_t>(); }
  void log(int64_t step, const train::StepResult& r, double, const train::StepWindow&,
           train::MetricsSink& sinks) override {
    sinks.write(step, {{"test/loss", r.loss}}, train::wall_time_s());
  }
  void after_step(int64_t, train::MetricsSink&) override {}
  bool checkpoint_due(int64_t step) const override { return step % 2 == 0; }
  void after_loop(int64_t, bool, train::MetricsSink&) override {}
  int64_t batches() const { return batches_; }

 private:
  int64_t total_, batches_ = 0;
  Kind kind_;
};

std::shared_ptr<train::Task> make_task(Kind kind) {
  torch::manual_seed(1);
  if (kind == Kind::kPretrain) {
    auto o = model::RetClipOptions();
    o.vision(model::vision_preset("vit-micro"));
    o.text(model::text_preset("bert-micro", 50));  // dropout on: the RNG state must resume
    o.embed_dim(o.vision().embed_dim());
    return std::make_shared<train::ContrastiveTask>(
        model::RetClip(o), loss::TripartiteLossOptions(), model::Precision::kFp32, 4.6);
  }
  auto vo = model::vision_preset("vit-micro").drop_path(0.2);  // drop-path draws too
  return std::make_shared<train::ClassifierTask>(model::Classifier(model::ClassifierOptions(vo, 3)),
                                                 at::Tensor(), model::Precision::kFp32);
}

/// Runs `total` steps in `dir` (resuming when asked); returns the weights and the summary.
std::pair<std::vector<at::Tensor>, train::LoopSummary> run_steps(const fs::path& dir, int64_t total,
                                                           bool resume, Kind kind) {
  config::Config cfg = config::load(
      "", {"log.dir=" + dir.string(), "train.device=cpu", "train.threads=1", "log.interval=1",
           "log.tensorboard=true", "checkpoint.resume=" + std::string(resume ? "auto" : "")});
  train::Run r = train::open_run(cfg, "loop", config::Precision::kFp32);
  auto task = make_task(kind);
  task->module().train();
  train::BuiltOptimizer opt = train::build_adamw(task->module(), cfg.optim);
  TestRecipe recipe(total, kind);
  train::StepOptions so;
  so.accum_steps = 2;
  train::NewRunDir guard(cfg, 0);
  train::LoopSummary s = train::run_loop(
      {cfg, r, recipe, task, *opt.optimizer, so, model::Precision::kFp32}, {}, guard);
  EXPECT_EQ(recipe.batches(), total);  // the data cursor resumes with the run
  std::vector<at::Tensor> w;
  for (const auto& p : task->module().parameters()) w.push_back(p.detach().clone());
  return {w, s};
}

bool has_restart_event(const fs::path& tb_dir) {
  const std::string start("\x3A\x02\x08\x01", 4);  // session_log{status=START}
  for (const auto& e : fs::directory_iterator(tb_dir))
    if (util::read_file(e.path()).find(start) != std::string::npos) return true;
  return false;
}

void resume_is_bit_exact(Kind kind, const std::string& name) {
  const fs::path root = test::fresh_dir("loop", name);
  const auto full = run_steps(root / "full", 6, false, kind);
  EXPECT_EQ(full.second.end_step, 6);
  const auto first = run_steps(root / "resumed", 3, false, kind);
  EXPECT_EQ(first.second.end_step, 3);
  const auto second = run_steps(root / "resumed", 6, true, kind);
  EXPECT_EQ(second.second.start_step, 3);
  EXPECT_EQ(second.second.end_step, 6);
  ASSERT_EQ(full.first.size(), second.first.size());
  for (size_t i = 0; i < full.first.size(); ++i)
    EXPECT_TRUE(torch::equal(full.first[i], second.first[i])) << name << " parameter " << i;
  EXPECT_FALSE(has_restart_event(root / "full" / "tensorboard"));
  EXPECT_TRUE(has_restart_event(root / "resumed" / "tensorboard"));
}

}  // namespace

TEST(Loop, PretrainingThroughTheLoopResumesBitExactly) {
  resume_is_bit_exact(Kind::kPretrain, "pretrain");
}

TEST(Loop, FinetuningThroughTheLoopResumesBitExactly) {
  resume_is_bit_exact(Kind::kFinetune, "finetune");
}
