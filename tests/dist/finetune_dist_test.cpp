// Distributed fine-tuning, 2 ranks on CPU (Gloo over loopback) through `retclip launch`:
// 2 ranks x batch 8 equal 1 rank x batch 16 (the same global batch, so the same lr):
// the same loss at every step and the same exported classifier within 1e-5. Mixup and
// drop-path are off here: their draws are per rank by design.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "../support/e2e.hpp"
#include "../support/finetune.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string args(const fs::path& data, const fs::path& dir, int batch) {
  return " finetune --set model.vision.preset=vit-micro --set model.text.preset=bert-micro"
         " --set data.image_size=32 --set finetune.data=" +
         data.string() + " --set finetune.level=eye --set finetune.epochs=2" +
         " --set finetune.batch_size=" + std::to_string(batch) +
         " --set finetune.warmup_epochs=1 --set finetune.blr=0.05 --set finetune.drop_path=0"
         " --set train.device=cpu --set train.threads=1 --set data.workers=1"
         " --set train.deterministic=true --set dist.timeout_s=60 --set log.interval=1"
         " --set log.tensorboard=false --set log.dir=" +
         dir.string();
}

std::map<int64_t, double> step_losses(const fs::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::map<int64_t, double> by_step;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j.contains("finetune/loss"))
      by_step[j["step"].get<int64_t>()] = j["finetune/loss"].get<double>();
  }
  return by_step;
}

}  // namespace

TEST(FinetuneDist, TwoRanksEqualOneRankWithTheGlobalBatch) {
  const fs::path root = retclip::test::fresh_dir("finetune-dist");
  const fs::path log = root / "commands.log";
  const fs::path data = retclip::test::synth_labelled(root, 40);
  const std::string bin = retclip::test::retclip_bin();
  ASSERT_EQ(retclip::test::run_logged("exec " + bin + args(data, root / "one", 16), log), 0)
      << retclip::util::read_file(log);
  const int port = 23000 + (getpid() % 500) * 7;
  ASSERT_EQ(
      retclip::test::run_logged("exec " + bin + " launch --nproc 2 --master-port " +
                                    std::to_string(port) + " --" + args(data, root / "two", 8),
                                log),
      0)
      << retclip::util::read_file(log);
  auto a = step_losses(root / "one"), b = step_losses(root / "two");
  ASSERT_FALSE(a.empty());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [step, loss] : a) EXPECT_NEAR(loss, b[step], 1e-5) << "step " << step;
  auto wa = retclip::io::load_weights(root / "one" / "classifier" / "classifier.safetensors");
  auto wb = retclip::io::load_weights(root / "two" / "classifier" / "classifier.safetensors");
  ASSERT_EQ(wa.size(), wb.size());
  double worst = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    ASSERT_EQ(wa[i].first, wb[i].first);
    worst = std::max(worst, (wa[i].second - wb[i].second).abs().max().item<double>());
  }
  EXPECT_LE(worst, 1e-5);
  EXPECT_TRUE(fs::exists(root / "two" / "finetune.rank1.log"));
  std::printf("[ dist ] finetune 2 ranks x 8 vs 1 rank x 16: %zu steps, max |weight diff| %.3g\n",
              a.size(), worst);
}
