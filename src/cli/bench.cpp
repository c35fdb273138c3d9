// `retclip bench`: times training steps of a config (see train/bench.hpp) and prints
// one JSON line and a readable table.
#include <fmt/format.h>

#include <fstream>

#include "command.hpp"
#include "retclip/config/config.hpp"
#include "retclip/train/bench.hpp"
#include "retclip/util/error.hpp"

namespace {

struct BenchArgs {
  std::string config;
  std::vector<std::string> set;
  retclip::train::BenchOptions options;
  std::string json_path;
};

retclip::cli::RunFn add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand(
      "bench",
      "Time training steps (patients/s, phase split, peak memory, MFU on CUDA); --task finetune "
      "times a fine-tuning step");
  sub->add_option("--config,-c", a->config, "YAML config (defaults when omitted)");
  sub->add_option("--set", a->set, "override a key: --set train.batch_size=64 (repeatable)");
  sub->add_option("--steps", a->options.steps, "timed steps")->capture_default_str();
  sub->add_option("--warmup", a->options.warmup, "untimed steps first")->capture_default_str();
  sub->add_option("--data", a->options.data,
                  "synthetic (random tensors on the device) | loader (the config's data.train)")
      ->capture_default_str();
  sub->add_option("--task", a->options.task,
                  "pretrain (the ContrastiveTask of retclip train) | finetune (the "
                  "ClassifierTask of retclip finetune, finetune.* keys, synthetic data)")
      ->capture_default_str();
  sub->add_option("--json", a->json_path, "also write the JSON line to this file");
  sub->add_option(
      "--profile", a->options.profile_path,
      "write a Chrome/Perfetto trace of the timed steps (Kineto: CPU ops, CUDA kernels)");
  sub->add_option("--bad-samples-dir", a->options.bad_samples_dir,
                  "--data loader: keep bad_samples.tsv in this folder (default: not kept)");
  sub->add_option("--peak-tflops", a->options.peak_tflops,
                  "peak dense bf16 TFLOP/s of the device for MFU (default: by device name)");
  return [a] {
    using namespace retclip;
    config::Config cfg = config::load(a->config, a->set);
    train::BenchResult r = train::run_bench(cfg, a->options);
    if (r.rank != 0) return 0;  // rank 0 reports for a distributed run
    const std::string line = r.to_json().dump();
    fmt::print("{}\n{}", line, r.table());
    if (!a->json_path.empty()) {
      std::ofstream out(a->json_path);
      RETCLIP_CHECK(out.good(), "--json: cannot write ", a->json_path);
      out << line << "\n";
    }
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(bench, add_bench);
