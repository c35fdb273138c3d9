// Tests of the run's model set-up: the same seed gives the same weights, ranks above 0
// draw their own dropout stream afterwards, and train.freeze.* freezes what it names.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "retclip/config/config.hpp"
#include "retclip/io/safetensors.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

using namespace retclip;

namespace {

config::Config micro_config(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> sets{"model.vision.preset=vit-micro", "model.text.preset=bert-micro",
                                "model.embed_dim=0", "data.image_size=32"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  return config::load("", sets);
}

}  // namespace

TEST(Setup, SameSeedSameWeightsAndRankStreamsDiffer) {
  auto cfg = micro_config();
  model::RetClip a = train::build_model(cfg, 50, at::kCPU, 0);
  const at::Tensor after_rank0 = torch::rand({3});
  model::RetClip b = train::build_model(cfg, 50, at::kCPU, 1);
  const at::Tensor after_rank1 = torch::rand({3});
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(p.value().equal(pb[p.key()])) << p.key();
  EXPECT_TRUE(a->is_training());
  EXPECT_FALSE(after_rank0.equal(after_rank1));
}

TEST(Setup, FreezeNamesWhatItFreezes) {
  auto cfg = micro_config({"train.freeze.text=true", "train.freeze.vision_blocks=1"});
  model::RetClip net = train::build_model(cfg, 50, at::kCPU, 0);
  int64_t frozen_text = 0, trainable_text = 0;
  for (const auto& p : net->named_parameters()) {
    const std::string& k = p.key();
    const bool trains = p.value().requires_grad();
    if (k.rfind("bert.", 0) == 0) (trains ? trainable_text : frozen_text)++;
    if (k.rfind("visual.transformer.resblocks.0.", 0) == 0 || k == "visual.conv1.weight") {
      EXPECT_FALSE(trains) << k;
    }
    if (k.rfind("visual.transformer.resblocks.1.", 0) == 0 || k.rfind("text_projection", 0) == 0) {
      EXPECT_TRUE(trains) << k;
    }
  }
  EXPECT_GT(frozen_text, 0);
  EXPECT_EQ(trainable_text, 0);
}

TEST(Setup, RequiredInitStopsWithoutFilesAndNoneOptsIn) {
  auto cfg = micro_config({"model.init.required=true"});
  try {
    train::build_model(cfg, 50, at::kCPU, 0);
    ADD_FAILURE() << "expected a UsageError";
  } catch (const UsageError& e) {
    const std::string m = e.what();
    for (const char* k : {"model.init.vision", "model.init.text", "model.init.full", "HINT:"})
      EXPECT_NE(m.find(k), std::string::npos) << k << " not in: " << m;
  }
  auto none = micro_config({"model.init.required=true", "model.init.vision=none"});
  EXPECT_NO_THROW(train::build_model(none, 50, at::kCPU, 0));
  EXPECT_NO_THROW(train::build_model(micro_config(), 50, at::kCPU, 0));  // not required
}

TEST(Setup, ClipInitImportsThePatientLogitScale) {
  auto cfg = micro_config();
  model::RetClip src = train::build_model(cfg, 50, at::kCPU, 0);
  io::TensorList clip;
  for (const auto& p : src->named_parameters())
    if (p.key().rfind("visual.", 0) == 0) clip.emplace_back(p.key(), p.value().detach() * 0.5);
  clip.emplace_back("logit_scale", torch::tensor(3.25f));
  const auto path = std::filesystem::temp_directory_path() / "retclip_setup_clip.safetensors";
  io::write_safetensors(path, clip);
  auto with = micro_config({"model.init.vision=" + path.string()});
  model::RetClip net = train::build_model(with, 50, at::kCPU, 0);
  std::filesystem::remove(path);
  EXPECT_FLOAT_EQ(net->logit_scale.item<float>(), 3.25f);
  // The eye levels keep model.logit_scale_init; the visual weights are the file's.
  EXPECT_NEAR(net->logit_scale_left.item<double>(), cfg.model.logit_scale_init, 1e-6);
  auto p = net->named_parameters();
  for (const auto& [k, v] : clip)
    if (k != "logit_scale") {
      EXPECT_TRUE(p[k].equal(v)) << k;
    }
}

namespace {

// A log.dir as an earlier run leaves it: two checkpoints and the metrics file.
std::filesystem::path earlier_run(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("retclip-setup-" + name);
  util::remove_tree(dir);
  fs::create_directories(dir / "checkpoints" / "step-00000002");
  fs::create_directories(dir / "checkpoints" / "step-00000004");
  fs::create_directories(dir / "tensorboard");
  util::write_file_atomic(dir / "metrics.jsonl", "{\"step\":1}\n");
  util::write_file_atomic(dir / "train.log", "earlier\n");
  return dir;
}

}  // namespace

TEST(ClaimRunDir, RefusesAnEarlierRunNamingItsNewestStep) {
  // Before: a new run in the same log.dir started at step 0, overwrote some checkpoints
  // and kept the others.
  const auto dir = earlier_run("refuse");
  auto cfg = micro_config({"log.dir=" + dir.string()});
  try {
    train::claim_run_dir(cfg, "retclip train", false, 0);
    FAIL() << "an earlier run was not refused";
  } catch (const UsageError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("log.dir " + dir.string() + " already holds a run (checkpoints up to step 4"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("retclip train --resume auto"), std::string::npos) << m;
    EXPECT_NE(m.find("--overwrite"), std::string::npos) << m;
  }
  EXPECT_TRUE(std::filesystem::exists(dir / "checkpoints" / "step-00000004"));
  // Only metrics, no checkpoint yet: still an earlier run.
  util::remove_tree(dir / "checkpoints");
  EXPECT_THROW(train::claim_run_dir(cfg, "retclip train", false, 0), UsageError);
}

TEST(ClaimRunDir, ResumeContinuesAndOverwriteStartsOver) {
  const auto dir = earlier_run("overwrite");
  auto resume = micro_config({"log.dir=" + dir.string(), "checkpoint.resume=auto"});
  EXPECT_NO_THROW(train::claim_run_dir(resume, "retclip train", false, 0));
  EXPECT_TRUE(std::filesystem::exists(dir / "checkpoints" / "step-00000004"));
  auto cfg = micro_config({"log.dir=" + dir.string()});
  // Ranks above 0 agree but leave the removal to rank 0.
  EXPECT_NO_THROW(train::claim_run_dir(cfg, "retclip train", true, 1));
  EXPECT_TRUE(std::filesystem::exists(dir / "metrics.jsonl"));
  train::claim_run_dir(cfg, "retclip train", true, 0);
  EXPECT_FALSE(std::filesystem::exists(dir / "checkpoints" / "step-00000002"));
  EXPECT_FALSE(std::filesystem::exists(dir / "checkpoints" / "step-00000004"));
  EXPECT_FALSE(std::filesystem::exists(dir / "metrics.jsonl"));
  EXPECT_FALSE(std::filesystem::exists(dir / "tensorboard"));
  EXPECT_NO_THROW(train::claim_run_dir(cfg, "retclip train", false, 0));  // a clean slate now
  // An empty or missing directory is a fresh run.
  util::remove_tree(dir);
  EXPECT_NO_THROW(train::claim_run_dir(cfg, "retclip train", false, 0));
}

TEST(NewRunDir, RemovedWhenTheCommandFailsBeforeItsFirstStep) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "retclip-setup-newrundir";
  util::remove_tree(dir);
  auto cfg = micro_config({"log.dir=" + dir.string()});
  {
    train::NewRunDir guard(cfg, 0);
    fs::create_directories(dir);
    util::write_file_atomic(dir / "train.log", "failed before step 1\n");
  }
  EXPECT_FALSE(fs::exists(dir));  // before: left behind by every failed command
  {
    train::NewRunDir guard(cfg, 0);
    fs::create_directories(dir);
    guard.keep();
  }
  EXPECT_TRUE(fs::exists(dir));
  {
    train::NewRunDir guard(cfg, 0);  // existed before this command: never removed
  }
  EXPECT_TRUE(fs::exists(dir));
  util::remove_tree(dir);
}

TEST(NewRunDir, KeptWhenItListsBadSamples) {
  // The pre-check's error names <log.dir>/bad_samples.tsv: that list must survive.
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "retclip-setup-newrundir-bad";
  util::remove_tree(dir);
  auto cfg = micro_config({"log.dir=" + dir.string()});
  {
    train::NewRunDir guard(cfg, 0);
    fs::create_directories(dir);
    util::write_file_atomic(dir / "bad_samples.tsv", "where\tpatient_id\treason\n");
  }
  EXPECT_FALSE(fs::exists(dir));  // only the header: nothing to keep
  {
    train::NewRunDir guard(cfg, 0);
    fs::create_directories(dir);
    util::write_file_atomic(dir / "bad_samples.tsv",
                            "where\tpatient_id\treason\nm.csv row 3\tp3\ttruncated JPEG\n");
  }
  EXPECT_TRUE(fs::exists(dir / "bad_samples.tsv"));
  util::remove_tree(dir);
}
