// `retclip benchmark` end to end on configs/bench-smoke.yaml, the file docs/EVALUATION.md
// shows: a demo-style export (2 pretraining steps of the micro presets) and `random` x a
// folder-layout eye set and a patient-level multi-label manifest x probe, 2-shot (2 seeds),
// zero-shot and a 1-epoch fine-tune. Every cell must equal what `retclip probe`,
// `retclip zeroshot` and `retclip finetune` give for it; a rerun recomputes nothing; a
// changed cell reruns and a failing one is recorded while the others go on.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>
#include <set>
#include <tuple>

#include "../support/e2e.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using retclip::test::retclip_bin;
using retclip::test::run_logged;
using retclip::util::read_file;

namespace {

const char* kSource = RETCLIP_SOURCE_DIR;

std::string fmt_row(const std::string& m, const std::string& s, const std::string& p, int64_t k,
                    uint64_t seed) {
  return m + "|" + s + "|" + p + "|" + std::to_string(k) + "|" + std::to_string(seed);
}

class BenchmarkE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work = retclip::test::fresh_dir("benchmark_e2e", "work");
    log = work / "log.txt";
    const std::string r = "cd " + work.string() + " && OMP_NUM_THREADS=1 " + retclip_bin();
    ready =
        run_logged("ln -s " + std::string(kSource) + "/configs " + (work / "configs").string(),
                   log) == 0 &&
        run_logged(r + " synth --out runs/demo/data --patients 80 --val 50 --seed 7 --size 48",
                   log) == 0 &&
        run_logged(r + " tokenizer train --manifest runs/demo/data/train.csv --vocab-size 160 "
                       "--out tok.model",
                   log) == 0 &&
        run_logged(r + " train --config configs/tiny-cpu.yaml --set model.vision.preset=vit-micro"
                       " --set model.text.preset=bert-micro --set model.embed_dim=32"
                       " --set data.image_size=32 --set data.context_length=32"
                       " --set data.train=runs/demo/data/train.csv --set data.val="
                       " --set data.tokenizer.path=tok.model --set train.steps=2"
                       " --set train.batch_size=8 --set train.threads=1 --set data.workers=1"
                       " --set log.dir=pretrain",
                   log) == 0 &&
        run_logged(
            r + " export --checkpoint pretrain/checkpoints --out runs/demo/export --parts full",
            log) == 0 &&
        run_logged("cd " + work.string() + " && python3 " + kSource +
                       "/scripts/bench_sets.py runs/demo/data/val.csv runs/bench-smoke/sets",
                   log) == 0 &&
        run_logged(r + " benchmark --config configs/bench-smoke.yaml --out runs/bench-smoke/report",
                   log) == 0;
    if (!ready) std::printf("%s", read_file(log).c_str());
  }
  void SetUp() override { ASSERT_TRUE(ready) << "the benchmark did not run"; }

  /// `retclip <args>` in the work directory; its output goes to the suite's log.
  static int retclip(const std::string& args) {
    return run_logged("cd " + work.string() + " && OMP_NUM_THREADS=1 " + retclip_bin() + " " + args,
                      log);
  }
  static json read_json(const fs::path& p) { return json::parse(read_file(work / p)); }
  static fs::path report() { return "runs/bench-smoke/report"; }

  /// The cells of results.json by (model, set, protocol, k, seed).
  using CellId = std::tuple<std::string, std::string, std::string, int64_t, uint64_t>;
  static std::map<CellId, json> cells() {
    std::map<CellId, json> out;
    const json j = read_json(report() / "results.json");
    for (const auto& c : j.at("cells"))
      out[{c.at("model").get<std::string>(), c.at("set").get<std::string>(),
           c.at("protocol").get<std::string>(), c.at("shots").get<int64_t>(),
           c.at("seed").get<uint64_t>()}] = c;
    return out;
  }

  static inline fs::path work, log;
  static inline bool ready = false;
};

const char* kClasses =
    "cataract,dr1,dr2,dr3,dr4,drusen,ga,glaucoma,hypertensive,myopia,naevus,normal";

void expect_same(const json& bench, const json& single, const std::string& what) {
  if (single.is_null()) {
    EXPECT_TRUE(bench.is_null()) << what;
    return;
  }
  ASSERT_TRUE(bench.is_number()) << what << ": " << bench.dump();
  EXPECT_DOUBLE_EQ(bench.get<double>(), single.get<double>()) << what;
}

}  // namespace

TEST_F(BenchmarkE2E, WritesEveryRowOfTheTable) {
  const auto rows = retclip::data::parse_csv(read_file(work / report() / "results.csv"));
  std::set<std::string> got, want;
  for (const char* m : {"retclip", "random"})
    for (const char* s : {"synth-eye", "synth-patient"}) {
      want.insert(fmt_row(m, s, "probe", 0, 0));
      want.insert(fmt_row(m, s, "few-shot", 2, 0));
      want.insert(fmt_row(m, s, "few-shot", 2, 1));
      want.insert(fmt_row(m, s, "finetune", 0, 0));
    }
  want.insert(fmt_row("retclip", "synth-patient", "zero-shot", 0, 0));
  ASSERT_GT(rows.size(), 1u);
  const auto& h = rows[0].fields;
  auto col = [&](const std::string& n) {
    return static_cast<size_t>(std::find(h.begin(), h.end(), n) - h.begin());
  };
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto& f = rows[i].fields;
    got.insert(fmt_row(f[0], f[1], f[2], std::stoll(f[3]), std::stoull(f[4])));
    EXPECT_EQ(f[col("status")], "done") << f[col("error")];
    EXPECT_FALSE(f[col("auroc")].empty());
    EXPECT_FALSE(f[col("auroc_lo")].empty());
    EXPECT_FALSE(f[col("test_hash")].empty());
    // kappa: single-label sets only.
    EXPECT_EQ(f[col("kappa")].empty(), f[1] == "synth-patient") << f[1];
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(rows.size(), 1u + 17u);
}

TEST_F(BenchmarkE2E, ProbeCellsEqualRetclipProbe) {
  const auto all = cells();
  struct SetArgs {
    const char *name, *args;
  };
  for (const SetArgs s : {SetArgs{"synth-eye", "--data runs/bench-smoke/sets/folder"},
                          SetArgs{"synth-patient",
                                  "--data runs/bench-smoke/sets/patients.csv --level patient "
                                  "--classes "}}) {
    std::string args =
        std::string(s.args) + (std::string(s.name) == "synth-patient" ? kClasses : "");
    const std::string common = "probe --weights runs/demo/export " + args +
                               " --c-grid 0.01,1,100 --bootstrap 200 --workers 1 --random-baseline";
    const std::string full = std::string("probe-") + s.name, shots = full + "-k2";
    ASSERT_EQ(retclip(common + " --out " + full), 0) << read_file(log);
    ASSERT_EQ(retclip(common + " --shots 2 --seeds 2 --seed 0 --out " + shots), 0)
        << read_file(log);
    for (const auto& [model, file] :
         {std::pair<std::string, std::string>{"retclip", "results.json"},
          {"random", "random_baseline.json"}}) {
      const json p = read_json(fs::path(full) / file);
      const json& c = all.at({model, s.name, "probe", 0, 0});
      const std::string what = model + " / " + s.name + " / probe";
      expect_same(c.at("metrics").at("auroc"), p.at("test").at("auroc_macro").at("mean"), what);
      expect_same(c.at("metrics").at("aupr"), p.at("test").at("aupr_macro").at("mean"), what);
      expect_same(c.at("metrics").at("f1"), p.at("test").at("f1_macro").at("mean"), what);
      if (p.at("test").contains("kappa"))
        expect_same(c.at("metrics").at("kappa"), p.at("test").at("kappa").at("mean"), what);
      expect_same(c.at("ci95").at("auroc")[0], p.at("test_ci95").at("auroc_macro").at("lo"), what);
      expect_same(c.at("ci95").at("auroc")[1], p.at("test_ci95").at("auroc_macro").at("hi"), what);
      EXPECT_EQ(c.at("splits").at("test").at("ids_hash"), p.at("splits").at("test").at("ids_hash"));
      EXPECT_EQ(c.at("chosen_c"), p.at("runs")[0].at("chosen_c")) << what;
      const json k = read_json(fs::path(shots) / file);
      for (uint64_t seed : {0u, 1u}) {
        const json& kc = all.at({model, s.name, "few-shot", 2, seed});
        const json& run = k.at("runs")[seed];
        ASSERT_EQ(run.at("seed"), seed);
        const std::string kw = what + " 2-shot seed " + std::to_string(seed);
        expect_same(kc.at("metrics").at("auroc"), run.at("test").at("auroc_macro"), kw);
        expect_same(kc.at("metrics").at("f1"), run.at("test").at("f1_macro"), kw);
        EXPECT_EQ(kc.at("train_rows"), run.at("train_rows")) << kw;
      }
    }
  }
}

TEST_F(BenchmarkE2E, ZeroShotCellEqualsRetclipZeroshot) {
  ASSERT_EQ(retclip("zeroshot --weights runs/demo/export --data runs/bench-smoke/sets/patients.csv "
                    "--level patient --prompts configs/prompts/synth-findings.yaml --bootstrap 200 "
                    "--workers 1 --out zs.json"),
            0)
      << read_file(log);
  const json z = read_json("zs.json");
  const auto all = cells();
  const json& c = all.at({"retclip", "synth-patient", "zero-shot", 0, 0});
  expect_same(c.at("metrics").at("auroc"), z.at("metrics").at("auroc_macro"), "zero-shot");
  expect_same(c.at("metrics").at("aupr"), z.at("metrics").at("aupr_macro"), "zero-shot");
  expect_same(c.at("metrics").at("f1"), z.at("metrics").at("f1_macro"), "zero-shot");
  expect_same(c.at("ci95").at("auroc")[0], z.at("ci95").at("auroc_macro").at("lo"), "zero-shot");
  EXPECT_EQ(c.at("n_test"), z.at("n"));
}

TEST_F(BenchmarkE2E, FinetuneCellsEqualRetclipFinetune) {
  const auto all = cells();
  int i = 0;
  for (const char* model : {"retclip", "random"})
    for (const char* set : {"synth-eye", "synth-patient"}) {
      const fs::path cell = report() / "cells" / model / set / "finetune-seed0";
      const std::string yaml = read_file(work / cell / "finetune.yaml");
      // The cell's config: the model as finetune.init (random: none), one epoch, seed 0.
      EXPECT_NE(yaml.find(std::string("init: ") +
                          (std::string(model) == "retclip" ? "runs/demo/export" : "\"\"")),
                std::string::npos)
          << yaml;
      EXPECT_NE(yaml.find("epochs: 1\n"), std::string::npos);
      const std::string dir = "ft-" + std::to_string(i++);
      ASSERT_EQ(retclip("finetune --config " + (cell / "finetune.yaml").string() +
                        " --set log.dir=" + dir),
                0)
          << read_file(log);
      const json r = read_json(fs::path(dir) / "results.json");
      const json& c = all.at({model, set, "finetune", 0, 0});
      const std::string what = std::string(model) + " / " + set + " / fine-tune";
      expect_same(c.at("metrics").at("auroc"), r.at("test").at("auroc_macro"), what);
      expect_same(c.at("metrics").at("aupr"), r.at("test").at("aupr_macro"), what);
      expect_same(c.at("metrics").at("f1"), r.at("test").at("f1_macro"), what);
      EXPECT_EQ(c.at("splits").at("test").at("ids_hash"), r.at("splits").at("test").at("hash"));
    }
}

TEST_F(BenchmarkE2E, WritesPlotsAndOnePage) {
  const std::string html = read_file(work / report() / "report.html");
  EXPECT_NE(html.find("<table>"), std::string::npos);
  std::vector<std::string> pngs;
  for (const auto& e : fs::directory_iterator(work / report() / "plots"))
    pngs.push_back(e.path().filename().string());
  // ROC: probe, 2-shot, fine-tune on both sets, zero-shot on the patient set; few-shot: 2.
  EXPECT_EQ(pngs.size(), 9u);
  for (const auto& p : pngs) {
    EXPECT_GT(fs::file_size(work / report() / "plots" / p), 10000u) << p;
    EXPECT_NE(html.find("plots/" + p), std::string::npos) << p;
  }
  const std::string md = read_file(work / report() / "results.md");
  EXPECT_NE(md.find("| synth-eye |"), std::string::npos) << md;
  EXPECT_NE(md.find("**"), std::string::npos) << md;
}

TEST_F(BenchmarkE2E, AVisionTowerScoresAsTheExportItCameFrom) {
  // The export's image tower in timm's format, as model.init.vision reads it: the same
  // weights and preprocessing, so the same probe cell.
  ASSERT_EQ(retclip("export --checkpoint pretrain/checkpoints --out export-timm --format timm"), 0)
      << read_file(log);
  retclip::util::write_file_atomic(
      work / "vision.yaml",
      "models:\n  - {name: tower, vision: export-timm/timm/model.safetensors}\n"
      "sets:\n  - {name: synth-eye, data: runs/bench-smoke/sets/folder}\n"
      "protocols:\n  probe: {c_grid: [0.01, 1, 100]}\n"
      "options: {bootstrap: 200, workers: 1}\n");
  ASSERT_EQ(retclip("benchmark --config vision.yaml --out vision-report"), 0) << read_file(log);
  const json v = read_json("vision-report/results.json").at("cells").at(0);
  const auto all = cells();
  const json& c = all.at({"retclip", "synth-eye", "probe", 0, 0});
  EXPECT_EQ(v.at("model"), "tower");
  EXPECT_NEAR(v.at("metrics").at("auroc").get<double>(), c.at("metrics").at("auroc").get<double>(),
              1e-9);
  EXPECT_EQ(v.at("chosen_c"), c.at("chosen_c"));
}

// Last in the suite: it rewrites the report.
TEST_F(BenchmarkE2E, ZzRerunSkipsDoneCellsAndRerunsChangedOrFailedOnes) {
  std::map<std::string, fs::file_time_type> before;
  for (const auto& e : fs::recursive_directory_iterator(work / report() / "cells"))
    if (e.path().filename() == "cell.json") before[e.path().string()] = e.last_write_time();
  ASSERT_EQ(before.size(), 17u);
  const fs::path out = work / "rerun.txt";
  ASSERT_EQ(
      run_logged("cd " + work.string() + " && OMP_NUM_THREADS=1 " + retclip_bin() +
                     " benchmark --config configs/bench-smoke.yaml --out " + report().string(),
                 out),
      0);
  EXPECT_NE(read_file(out).find("17 cells, 0 run now, 17 done earlier, 0 failed"),
            std::string::npos)
      << read_file(out);
  for (const auto& [p, t] : before) EXPECT_EQ(fs::last_write_time(p), t) << p;

  // Another C grid reruns the 12 probe cells (and names why); a fine-tune batch larger
  // than the training split fails those 4 cells, recorded, while the others go on.
  std::string yaml = read_file(work / "configs" / "bench-smoke.yaml");
  yaml.replace(yaml.find("[0.01, 1, 100]"), 14, "[0.1, 10]");
  yaml.replace(yaml.find("batch_size: 8"), 13, "batch_size: 5000");
  retclip::util::write_file_atomic(work / "changed.yaml", yaml);
  const fs::path out2 = work / "changed.txt";
  EXPECT_EQ(run_logged("cd " + work.string() + " && OMP_NUM_THREADS=1 " + retclip_bin() +
                           " benchmark --config changed.yaml --out " + report().string(),
                       out2),
            1);
  const std::string text = read_file(out2);
  EXPECT_NE(text.find("17 cells, 16 run now, 1 done earlier, 4 failed"), std::string::npos) << text;
  EXPECT_NE(text.find("cell retclip / synth-eye / linear probe / seed 0: its config changed "
                      "(protocol/c_grid), so it runs again"),
            std::string::npos)
      << text;
  const auto all = cells();
  const json& failed = all.at({"random", "synth-eye", "finetune", 0, 0});
  EXPECT_EQ(failed.at("status"), "failed");
  EXPECT_NE(failed.at("error").get<std::string>().find("fewer than one global batch"),
            std::string::npos);
  EXPECT_EQ(all.at({"random", "synth-eye", "probe", 0, 0}).at("status"), "done");
  EXPECT_NE(read_file(work / report() / "results.md").find("## Failed cells"), std::string::npos);
}

TEST_F(BenchmarkE2E, DocsShowTheConfigTheTestRuns) {
  // docs/EVALUATION.md quotes configs/bench-smoke.yaml without its leading comment lines.
  std::string yaml = read_file(std::string(kSource) + "/configs/bench-smoke.yaml");
  while (yaml.rfind("#", 0) == 0) yaml = yaml.substr(yaml.find('\n') + 1);
  EXPECT_NE(
      read_file(std::string(kSource) + "/docs/EVALUATION.md").find("```yaml\n" + yaml + "```"),
      std::string::npos)
      << "docs/EVALUATION.md, Benchmark: quote configs/bench-smoke.yaml as it is";
}
