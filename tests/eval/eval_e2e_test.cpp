// End to end on real photographs (../shared/data/odir-sample, 48 patients, 8 patient
// labels; skipped when absent): a 2-step tiny pretraining on their keyword reports, then
// export, eval (tie-aware recall), features, probe and zero-shot through the binary.
// It tests the path, not the science.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

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
  // Patient-level progress counts patients, and ends at n of n.
  EXPECT_NE(retclip::util::read_file(log).find("features: 48/48 patients (100%)"),
            std::string::npos)
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

namespace {

// Every "label: done/total unit (p%)" progress line of `text` whose count exceeds its
// total (a padded last batch counted twice).
std::vector<std::string> progress_overruns(const std::string& text) {
  std::vector<std::string> out;
  std::regex line(R"((\w+): (\d+)/(\d+) (\w+) \((\d+)%\))");
  for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it)
    if (std::stoll((*it)[2]) > std::stoll((*it)[3])) out.push_back(it->str());
  return out;
}

}  // namespace

// The seams between commands on the synthetic set (issue 22, items 4 and 7): progress
// ends at n of n when the last batch is padded; `probe --features` reads the level the
// file records; a set whose split column lacks train/test is refused with the counts and
// the flag that draws them; fine-tuning's hints name finetune.* keys.
TEST(EvalE2E, SyntheticSeams) {
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "eval_seams";
  retclip::util::remove_tree(dir);
  fs::create_directories(dir);
  const fs::path log = dir / "log.txt";
  ASSERT_EQ(retclip::test::make_synthetic_shards(dir, log), 0) << retclip::util::read_file(log);
  const std::string bin = retclip_bin(), d = dir.string(), val = d + "/data/val.csv";
  // Each command's output alone, so that the checks below see only that command.
  auto run = [&](const std::string& args, std::string* out) {
    const fs::path one = dir / "one.txt";
    fs::remove(one);
    int rc = run_logged(bin + " " + args, one, "OMP_NUM_THREADS=1");
    *out = retclip::util::read_file(one);
    retclip::util::write_file_atomic(log, retclip::util::read_file(log) + *out);
    return rc;
  };
  std::string out;
  // The help names the files probe writes.
  ASSERT_EQ(run("probe --help", &out), 0) << out;
  EXPECT_NE(out.find("results.json and results_predictions.csv"), std::string::npos) << out;
  EXPECT_EQ(out.find("and predictions.csv"), std::string::npos) << out;
  ASSERT_EQ(run("train --config " RETCLIP_SOURCE_DIR "/configs/tiny-cpu.yaml --set log.dir=" + d +
                    "/run --set data.train=" + d + "/data/shards-train --set data.val= "
                    "--set model.vision.preset=vit-micro --set model.text.preset=bert-micro "
                    "--set model.embed_dim=0 "
                    "--set data.tokenizer.path=" + d + "/data/tok.model --set data.image_size=32 "
                    "--set data.context_length=32 "
                    "--set train.steps=2 --set train.batch_size=8 --set train.threads=1 "
                    "--set data.workers=1 --set log.tensorboard=false",
                &out),
            0)
      << out;
  ASSERT_EQ(run("export --checkpoint " + d + "/run/checkpoints --out " + d + "/export --parts full",
                &out),
            0)
      << out;

  // 32 patients in batches of 20: the second batch is padded with 8 repeats.
  ASSERT_EQ(run("embed --weights " + d + "/export --manifest " + val + " --batch 20 --workers 1 --out " +
                    d + "/e.safetensors",
                &out),
            0)
      << out;
  EXPECT_NE(out.find("embed: 32/32 patients (100%)"), std::string::npos) << out;
  EXPECT_TRUE(progress_overruns(out).empty()) << out;

  // features at its default level (eye); probe --features without --level reads it.
  ASSERT_EQ(run("features --weights " + d + "/export --data " + val + " --batch 20 --workers 1 --out " +
                    d + "/feats.safetensors",
                &out),
            0)
      << out;
  EXPECT_TRUE(progress_overruns(out).empty()) << out;
  ASSERT_EQ(run("probe --features " + d + "/feats.safetensors --data " + val +
                    " --ignore-split --test-fraction 0.3 --bootstrap 0 --c-grid 1 --out " + d +
                    "/probe",
                &out),
            0)
      << out;
  EXPECT_NE(out.find("eye level"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(dir / "probe" / "results_predictions.csv"));
  // An explicit level that is not the file's names both.
  EXPECT_EQ(run("probe --features " + d + "/feats.safetensors --data " + val +
                    " --level patient --ignore-split --test-fraction 0.3 --out " + d + "/probe2",
                &out),
            2);
  EXPECT_NE(out.find("--level patient differs from the level of"), std::string::npos) << out;
  EXPECT_NE(out.find("(eye;"), std::string::npos) << out;

  // Every row of synth's val.csv says split=val: refused with the counts and the flag.
  EXPECT_EQ(run("probe --features " + d + "/feats.safetensors --data " + val +
                    " --test-fraction 0.3 --out " + d + "/probe3",
                &out),
            2);
  EXPECT_NE(out.find("train 0, val "), std::string::npos) << out;
  EXPECT_NE(out.find("test 0"), std::string::npos) << out;
  EXPECT_NE(out.find("HINT: --ignore-split"), std::string::npos) << out;

  // Fine-tuning on the same set: its hint names finetune.* keys, no probe flags.
  const std::string ft = "finetune --config " RETCLIP_SOURCE_DIR
                         "/configs/finetune-synth-dr.yaml --set data.image_size=32 "
                         "--set model.vision.preset=vit-micro "
                         "--set finetune.epochs=1 --set finetune.warmup_epochs=0 "
                         "--set finetune.batch_size=16 --set data.workers=1 "
                         "--set train.device=cpu --set log.tensorboard=false ";
  EXPECT_EQ(run(ft + "--set data.on_bad_sample=skip --set finetune.data=" + val + " --set log.dir=" + d +
                    "/ft-bad",
                &out),
            2);
  EXPECT_NE(out.find("fine-tuning needs train, val items"), std::string::npos) << out;
  EXPECT_NE(out.find("finetune.test_fraction"), std::string::npos) << out;
  EXPECT_EQ(out.find("--test-fraction"), std::string::npos) << out;
  EXPECT_EQ(out.find("--ignore-split"), std::string::npos) << out;

  // The DR-grade manifest from synth's CSV, fine-tuned at eye level, then predict with a
  // padded last batch.
  ASSERT_EQ(run_logged("python3 " RETCLIP_SOURCE_DIR "/scripts/synth_dr_labels.py " + val + " " +
                           d + "/dr.csv",
                       log),
            0)
      << retclip::util::read_file(log);
  ASSERT_EQ(run(ft + "--set finetune.data=" + d + "/dr.csv --set log.dir=" + d + "/ft", &out), 0)
      << out;
  ASSERT_EQ(run("predict --weights " + d + "/ft/classifier --manifest " + val +
                    " --batch 20 --workers 1 --out " + d + "/probs.csv",
                &out),
            0)
      << out;
  EXPECT_NE(out.find("predict: "), std::string::npos) << out;
  EXPECT_NE(out.find(" images (100%)"), std::string::npos) << out;
  EXPECT_TRUE(progress_overruns(out).empty()) << out;
}
