// `retclip benchmark`: encoders x labelled sets x protocols in one resumable run, with
// results.csv/json/md, plots and report.html (docs/EVALUATION.md, "Benchmark").
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/eval/benchmark.hpp"
#include "retclip/train/finetune.hpp"

namespace {

struct BenchmarkArgs {
  std::string config, out;
};

retclip::cli::RunFn add_benchmark(CLI::App& app) {
  auto a = std::make_shared<BenchmarkArgs>();
  auto* sub = app.add_subcommand(
      "benchmark",
      "Judge encoders on labelled sets (probe, K-shot, zero-shot, fine-tune) into one report");
  sub->add_option("--config,-c", a->config, "benchmark YAML (e.g. configs/bench-smoke.yaml)")
      ->required();
  sub->add_option("--out", a->out,
                  "output directory: cells/, results.csv/json/md, plots/, report.html; a "
                  "rerun skips the cells already done")
      ->required();
  return [a] {
    using namespace retclip;
    const eval::BenchConfig cfg = eval::load_bench_config(a->config);
    // Fine-tuning cells run `retclip finetune`'s function; a cell's log.dir starts over.
    // A run a stop signal ended early has no results (null): the benchmark stops there.
    const eval::BenchSummary s = eval::run_benchmark(cfg, a->out, [](const config::Config& c) {
      return train::run_finetune(c, {/*max_minutes=*/0, /*overwrite=*/true}).results;
    });
    fmt::print(
        "benchmark: {} cells, {} run now, {} done earlier, {} failed; report {}/report.html\n",
        s.cells, s.ran, s.skipped, s.failed, a->out);
    return s.failed > 0 ? 1 : 0;
  };
}

}  // namespace

RETCLIP_COMMAND(benchmark, add_benchmark);
