// End to end on real photographs (../shared/data/odir-sample, 48 patients, 8 patient
// labels; skipped when absent): a 2-step tiny pretraining on their keyword reports, then
// export, eval (tie-aware recall), features, probe and zero-shot through the binary.
// It tests the path, not the science.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "../support/e2e.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using retclip::test::retclip_bin;
using retclip::test::run_logged;

TEST(EvalE2E, EveryCommandOnOdirSample) {
  const fs::path src = fs::path(RETCLIP_SOURCE_DIR) / ".." / "shared" / "data" / "odir-sample";
  if (!fs::exists(src / "labels.csv")) GTEST_SKIP() << "no ../shared/data/odir-sample";
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "eval_e2e";
  retclip::util::remove_tree(dir);
  fs::create_directories(dir);
  const fs::path log = dir / "log.txt";
  auto quote = [](const std::string& s) { return "\"" + s + "\""; };
  // Pretraining manifest: the doctors' keywords per eye make the report.
  std::string csv = "patient_id,left_image,right_image,report\n";
  for (const auto& r : retclip::data::parse_csv(retclip::util::read_file(src / "labels.csv"))) {
    if (r.fields.size() < 6 || r.fields[0] == "patient_id") continue;
    csv += r.fields[0] + "," + quote((src / r.fields[1]).string()) + "," +
           quote((src / r.fields[2]).string()) + "," +
           quote("left eye: " + r.fields[3] + ". right eye: " + r.fields[4] + ".") + "\n";
  }
  retclip::util::write_file_atomic(dir / "manifest.csv", csv);
  const std::string bin = retclip_bin(), d = dir.string(), labels = (src / "labels.csv").string();
  const std::string classes = " --classes N,D,G,C,A,H,M,O";
  auto run = [&](const std::string& args) {
    return run_logged(bin + " " + args, log, "OMP_NUM_THREADS=1");
  };
  ASSERT_EQ(run("tokenizer train --manifest " + d + "/manifest.csv --vocab-size 120 --out " + d +
                "/tok.model"),
            0)
      << retclip::util::read_file(log);
  ASSERT_EQ(run("train --config " RETCLIP_SOURCE_DIR "/configs/tiny-cpu.yaml --set log.dir=" + d +
                "/run --set data.train=" + d + "/manifest.csv --set data.val=" + d +
                "/manifest.csv --set data.tokenizer.path=" + d +
                "/tok.model --set train.steps=2 "
                "--set train.batch_size=8 --set train.threads=1 --set data.workers=1"),
            0)
      << retclip::util::read_file(log);
  ASSERT_EQ(
      run("export --checkpoint " + d + "/run/checkpoints --out " + d + "/export --parts full"), 0)
      << retclip::util::read_file(log);
  ASSERT_EQ(run("eval --checkpoint " + d + "/run/checkpoints --data " + d + "/manifest.csv --out " +
                d + "/eval.json"),
            0)
      << retclip::util::read_file(log);
  auto ev = nlohmann::json::parse(retclip::util::read_file(dir / "eval.json"));
  // Many of the 48 patients share a report (e.g. both eyes "normal fundus").
  EXPECT_LT(ev.at("distinct_reports").get<int64_t>(), 48);
  EXPECT_NE(retclip::util::read_file(log).find("distinct reports among"), std::string::npos);

  ASSERT_EQ(
      run("features --weights " + d + "/export --data " + labels + classes +
          " --level patient --feature pre_proj --workers 2 --out " + d + "/feats.safetensors"),
      0)
      << retclip::util::read_file(log);
  ASSERT_EQ(run("probe --features " + d + "/feats.safetensors --data " + labels + classes +
                " --test-fraction 0.4 --split-seed 3 --bootstrap 20 --c-grid 0.1,1 --out " + d +
                "/probe"),
            0)
      << retclip::util::read_file(log);
  auto pr = nlohmann::json::parse(retclip::util::read_file(dir / "probe/results.json"));
  EXPECT_EQ(pr.at("task"), "multi-label");
  EXPECT_EQ(pr.at("classes").size(), 8u);
  EXPECT_GT(pr.at("splits").at("test").at("n").get<int64_t>(), 10);
  EXPECT_TRUE(pr.at("splits").at("test_drawn").get<bool>());
  EXPECT_TRUE(pr.at("test").contains("auroc_macro"));
  EXPECT_TRUE(fs::exists(dir / "probe/results_predictions.csv"));
  // Bad input: flag strings without the class order.
  EXPECT_EQ(run("probe --features " + d + "/feats.safetensors --data " + labels +
                " --test-fraction "
                "0.4 --out " +
                d + "/probe2"),
            2);

  ASSERT_EQ(run("zeroshot --weights " + d + "/export --data " + labels +
                " --prompts " RETCLIP_SOURCE_DIR
                "/configs/prompts/odir.yaml --level patient --all --bootstrap 20 "
                "--out " +
                d + "/zeroshot.json"),
            0)
      << retclip::util::read_file(log);
  auto zs = nlohmann::json::parse(retclip::util::read_file(dir / "zeroshot.json"));
  EXPECT_EQ(zs.at("n").get<int64_t>(), 48);
  EXPECT_TRUE(zs.at("metrics").contains("auroc_macro"));
}
