// The benchmark's config (validation before anything runs, errors naming the key), its
// cells, their keys, and the config of a fine-tuning cell. The whole run against the
// single commands is tests/cli/benchmark_e2e_test.cpp.
#include <gtest/gtest.h>

#include "../support/scratch.hpp"
#include "retclip/eval/benchmark.hpp"
#include "retclip/util/fs.hpp"

using namespace retclip;

namespace {

struct BenchFiles {
  std::filesystem::path dir;
  std::string yaml(const std::string& models, const std::string& sets, const std::string& protocols,
                   const std::string& extra = "") const {
    return "models:\n" + models + "sets:\n" + sets + "protocols:\n" + protocols + extra;
  }
};

BenchFiles bench_files() {
  BenchFiles f;
  f.dir = test::scratch_dir("benchmark", "cfg");
  std::filesystem::create_directories(f.dir / "export");
  std::filesystem::create_directories(f.dir / "folder" / "train" / "a");
  util::write_file_atomic(f.dir / "set.csv", "patient_id,left_image,right_image,label\n");
  util::write_file_atomic(f.dir / "prompts.yaml",
                          "classes:\n  - {name: a, prompts: [\"a\"]}\n  - {name: b, prompts: "
                          "[\"b\"]}\n");
  return f;
}

std::string models_of(const BenchFiles& f) {
  return "  - {name: pre, weights: " + (f.dir / "export").string() +
         "}\n  - {name: rnd, random: pre, seed: 3}\n";
}

std::string sets_of(const BenchFiles& f) {
  return "  - {name: folder, data: " + (f.dir / "folder").string() +
         "}\n  - {name: manifest, data: " + (f.dir / "set.csv").string() +
         ", level: patient, prompts: " + (f.dir / "prompts.yaml").string() + "}\n";
}

const char* kAllProtocols =
    "  probe: {c_grid: [1, 10]}\n  few_shot: {shots: [4, 2], seeds: 2, seed: 5}\n"
    "  zeroshot: {}\n  finetune: {seeds: [0, 1], epochs: 1, batch_size: 4, set: "
    "[finetune.warmup_epochs=0]}\n";

std::string config_error(const std::string& yaml) {
  return test::usage_error_of([&] { eval::parse_bench_config(yaml, "bench.yaml"); });
}

}  // namespace

TEST(Benchmark, ParsesEveryProtocolAndEnumeratesTheCells) {
  const BenchFiles f = bench_files();
  const eval::BenchConfig c =
      eval::parse_bench_config(f.yaml(models_of(f), sets_of(f), kAllProtocols), "bench.yaml");
  EXPECT_EQ(c.models[1].kind(), "random");
  EXPECT_EQ(c.few_shot.shots, (std::vector<int64_t>{2, 4}));  // sorted
  EXPECT_EQ(c.finetune.set, std::vector<std::string>{"finetune.warmup_epochs=0"});
  const auto cells = eval::bench_cells(c);
  // Per model and set: probe 1 + few-shot 2 K x 2 seeds + fine-tune 2 seeds = 7; zero-shot
  // only for the weights model (an export dir without retclip.json counts as a checkpoint,
  // which holds the text tower) on the set with prompts.
  EXPECT_EQ(cells.size(), 2u * 2u * 7u + 1u);
  EXPECT_EQ(cells[1].protocol, "few-shot");
  EXPECT_EQ(cells[1].shots, 2);
  EXPECT_EQ(cells[1].seed, 5u);
  EXPECT_EQ(cells[1].dir(), "cells/pre/folder/few-shot-k2-seed5");
  int zs = 0;
  for (const auto& cell : cells) zs += cell.protocol == "zero-shot";
  EXPECT_EQ(zs, 1);
  EXPECT_EQ(cells[0].label(), "pre / folder / linear probe / seed 0");
  // A vision-only export has no text tower: no zero-shot cell.
  std::filesystem::create_directories(f.dir / "vision-export");
  util::write_file_atomic(f.dir / "vision-export" / "retclip.json",
                          R"({"format": "retclip-export", "files": {"vision": "v.safetensors"}})");
  const auto v = eval::parse_bench_config(
      f.yaml("  - {name: v, weights: " + (f.dir / "vision-export").string() + "}\n", sets_of(f),
             "  zeroshot: {}\n"),
      "bench.yaml");
  EXPECT_TRUE(eval::bench_cells(v).empty());
}

TEST(Benchmark, KeysChangeWithWhatDecidesTheCell) {
  const BenchFiles f = bench_files();
  const auto a =
      eval::parse_bench_config(f.yaml(models_of(f), sets_of(f), kAllProtocols), "bench.yaml");
  auto b = a;
  b.probe.c_grid = {1, 100};
  const auto cells = eval::bench_cells(a);
  const eval::BenchCell& probe = cells[0];
  eval::BenchCell finetune = probe;
  finetune.protocol = "finetune";
  EXPECT_EQ(eval::cell_key(a, probe), eval::cell_key(a, probe));
  EXPECT_NE(eval::cell_key(a, probe), eval::cell_key(b, probe));
  // The probe's C grid is no part of a fine-tuning cell.
  EXPECT_EQ(eval::cell_key(a, finetune), eval::cell_key(b, finetune));
  b.finetune.epochs = 2;
  EXPECT_NE(eval::cell_key(a, finetune), eval::cell_key(b, finetune));
  // A rewritten set file changes its fingerprint.
  const auto before = eval::cell_key(a, cells[cells.size() - 1]);
  util::write_file_atomic(f.dir / "set.csv", "patient_id,left_image,right_image,label\n\n");
  EXPECT_NE(before, eval::cell_key(a, cells[cells.size() - 1]));
}

TEST(Benchmark, RefusesABadConfigNamingTheKey) {
  const BenchFiles f = bench_files();
  const std::string m = models_of(f), s = sets_of(f);
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  std::string e = config_error(f.yaml(m, s, "  probe: {}\n  fewshot: {shots: [1]}\n"));
  EXPECT_TRUE(has(e, "protocols.fewshot: unknown key")) << e;
  EXPECT_TRUE(has(e, "HINT:")) << e;
  e = config_error(f.yaml("  - {name: x, weights: /nowhere}\n", s, "  probe: {}\n"));
  EXPECT_TRUE(has(e, "models[0].weights: '/nowhere' does not exist")) << e;
  e = config_error(f.yaml(m + "  - {name: r2, random: nobody}\n", s, "  probe: {}\n"));
  EXPECT_TRUE(has(e, "models[2].random: 'nobody'")) << e;
  e = config_error(f.yaml(m + "  - {name: pre, random: rnd}\n", s, "  probe: {}\n"));
  EXPECT_TRUE(has(e, "models[2].name: 'pre' is used twice")) << e;
  e = config_error(f.yaml(m,
                          "  - {name: f, data: " + (f.dir / "folder").string() +
                              ", prompts: " + (f.dir / "prompts.yaml").string() + "}\n",
                          "  zeroshot: {}\n"));
  EXPECT_TRUE(has(e, "sets[0].prompts: zero-shot scores an eye")) << e;
  e = config_error(f.yaml(m,
                          "  - {name: s, data: " + (f.dir / "set.csv").string() +
                              ", classes: [b, a], prompts: " + (f.dir / "prompts.yaml").string() +
                              "}\n",
                          "  probe: {}\n"));
  EXPECT_TRUE(has(e, "sets[0].classes: [b,a] differ")) << e;
  e = config_error(f.yaml(m, s, "  finetune: {set: [finetune.init=x]}\n"));
  EXPECT_TRUE(has(e, "'finetune.init' is set by the benchmark")) << e;
  e = config_error(f.yaml(m, s, "  finetune: {set: [finetune.blr=fast]}\n"));
  EXPECT_TRUE(has(e, "protocols.finetune.set")) << e;
  EXPECT_TRUE(has(e, "finetune.blr")) << e;
  e = config_error(f.yaml(m, s, "  probe: {}\n", "options: {device: tpu}\n"));
  EXPECT_TRUE(has(e, "options.device: expected auto, cpu or cuda")) << e;
  e = config_error(f.yaml(m, s, "  probe: false\n"));
  EXPECT_TRUE(has(e, "protocols: no protocol is on")) << e;
  e = config_error(
      f.yaml(m, "  - {name: f, data: " + (f.dir / "folder").string() + "}\n", "  zeroshot: {}\n"));
  EXPECT_TRUE(has(e, "no set has a prompt file")) << e;
  e = test::usage_error_of([&] { eval::load_bench_config((f.dir / "none.yaml").string()); });
  EXPECT_TRUE(has(e, "none.yaml does not exist")) << e;
}

TEST(Benchmark, FinetuneCellConfigCarriesTheCell) {
  const BenchFiles f = bench_files();
  const auto c =
      eval::parse_bench_config(f.yaml(models_of(f), sets_of(f), kAllProtocols), "bench.yaml");
  config::Config enc;
  enc.model.vision.preset = "vit-micro";
  enc.model.init.vision = "should-not-carry";
  enc.data.image_size = 32;
  enc.data.mean = {0.5, 0.5, 0.5};
  const auto cfg = eval::finetune_cell_config(c, c.models[0], c.sets[1], enc, 1, f.dir / "run");
  EXPECT_EQ(cfg.finetune.init, (f.dir / "export").string());
  EXPECT_EQ(cfg.finetune.data, c.sets[1].data);
  EXPECT_EQ(cfg.finetune.classes, (std::vector<std::string>{"a", "b"}));  // the prompt file's
  EXPECT_EQ(cfg.finetune.epochs, 1);
  EXPECT_EQ(cfg.finetune.batch_size, 4);
  EXPECT_EQ(cfg.finetune.warmup_epochs, 0);
  EXPECT_EQ(cfg.train.seed, 1u);
  EXPECT_EQ(cfg.data.image_size, 32);
  EXPECT_EQ(cfg.data.mean[0], 0.5);
  EXPECT_EQ(cfg.model.vision.preset, "vit-micro");
  EXPECT_TRUE(cfg.model.init.vision.empty());
  EXPECT_EQ(cfg.log.dir, (f.dir / "run").string());
  // A random model: no finetune.init, the shape of the model it copies.
  const auto rnd = eval::finetune_cell_config(c, c.models[1], c.sets[1], enc, 0, f.dir / "r");
  EXPECT_TRUE(rnd.finetune.init.empty());
  EXPECT_EQ(rnd.model.vision.preset, "vit-micro");
  EXPECT_TRUE(rnd.model.init.vision.empty());
}
