// bench_model: times RetClip on CPU and prints one JSON line with per-step times.
// Two kinds of step alternate, so that load noise hits both alike:
//   fwd_bwd  zero_grad, forward (both eyes + texts), tripartite loss, backward
//   train    the same + AdamW step (train::build_adamw, the trainer's optimizer)
// scripts/bench_model.sh runs it next to bench/bench_model.py (PyTorch eager) with the
// same sizes and threads, alternating the two processes.
//
//   bench_model VISION_PRESET TEXT_PRESET VOCAB BATCH TOKENS THREADS STEPS
//
// Environment: RETCLIP_BENCH_OPTIM=libtorch times torch::optim::AdamW (LibTorch's
// per-parameter loop) instead of the trainer's optimizer; RETCLIP_BENCH_PROFILE=FILE
// writes a chrome trace of 3 extra train steps (legacy autograd profiler).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "retclip/loss/tripartite.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/util/system.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

/// CPU time of the process (all threads), ms: less sensitive than wall time to other
/// processes on a shared machine.
double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

std::string ms_list(const std::vector<double>& v) {
  std::vector<std::string> s;
  for (double x : v) s.push_back(fmt::format("{:.1f}", x));
  return fmt::format("[{}]", fmt::join(s, ", "));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace retclip;
  if (argc != 8) {
    std::cerr << "usage: bench_model VISION_PRESET TEXT_PRESET VOCAB BATCH TOKENS THREADS STEPS\n";
    return 2;
  }
  const std::string vision = argv[1], text = argv[2];
  const int64_t vocab = std::stoll(argv[3]), batch = std::stoll(argv[4]),
                tokens = std::stoll(argv[5]), threads = std::stoll(argv[6]),
                steps = std::stoll(argv[7]);
  const char* optim_env = std::getenv("RETCLIP_BENCH_OPTIM");
  const bool libtorch_adamw = optim_env && std::string(optim_env) == "libtorch";
  const char* profile = std::getenv("RETCLIP_BENCH_PROFILE");
  util::configure_threads(threads);
  util::tune_malloc_for_training();  // as the trainer does
  torch::manual_seed(0);
  auto v = model::vision_preset(vision);
  model::RetClip net(model::RetClipOptions()
                         .vision(v)
                         .text(model::text_preset(text, vocab))
                         .embed_dim(v.embed_dim()));
  net->train();
  // The trainer's optimizer (reference defaults: two groups, lr 3e-5, wd 0.001).
  auto built = train::build_adamw(*net, config::OptimConfig{});
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (libtorch_adamw) {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    for (const auto& g : built.optimizer->param_groups())
      groups.emplace_back(g.params(), g.options().clone());
    opt = std::make_unique<torch::optim::AdamW>(groups);
  } else {
    opt = std::move(built.optimizer);
  }

  const int64_t s = v.image_size();
  auto left = torch::randn({batch, 3, s, s}), right = torch::randn({batch, 3, s, s});
  auto tok = torch::randint(1, vocab, {batch, tokens}, torch::kLong);
  const loss::TripartiteLossOptions lopts;
  auto fwd_bwd = [&] {
    auto e = net->forward(left, right, tok);
    auto out = loss::tripartite_loss(e, lopts);
    out.total.backward();
    return out.total.item<double>();
  };
  double opt_ms_last = 0;
  auto train_step = [&] {
    opt->zero_grad();
    const double l = fwd_bwd();
    const auto t = Clock::now();
    opt->step();
    opt_ms_last = ms_since(t);
    return l;
  };
  auto fwd_bwd_step = [&] {
    net->zero_grad();
    return fwd_bwd();
  };
  fwd_bwd_step();  // warm-up (allocator, oneDNN primitives), not timed
  train_step();
  std::vector<double> fb_ms, train_ms, opt_ms, fb_cpu, train_cpu;
  for (int64_t i = 0; i < steps; ++i) {
    auto t0 = Clock::now();
    double c0 = cpu_ms();
    fwd_bwd_step();
    fb_ms.push_back(ms_since(t0));
    fb_cpu.push_back(cpu_ms() - c0);
    t0 = Clock::now();
    c0 = cpu_ms();
    train_step();
    train_ms.push_back(ms_since(t0));
    train_cpu.push_back(cpu_ms() - c0);
    opt_ms.push_back(opt_ms_last);
  }
  if (profile) {
    torch::autograd::profiler::RecordProfile guard(profile);
    for (int i = 0; i < 3; ++i) train_step();
  }
  fmt::print(
      "{{\"impl\": \"retclip-cpp\", \"optimizer\": \"{}\", \"vision\": \"{}\", \"text\": \"{}\", "
      "\"batch\": {}, \"tokens\": {}, \"threads\": {}, \"steps\": {}, "
      "\"fwd_bwd_ms\": {}, \"train_ms\": {}, \"optim_ms\": {}, "
      "\"fwd_bwd_cpu_ms\": {}, \"train_cpu_ms\": {}, "
      "\"fwd_bwd_median_ms\": {:.1f}, \"train_median_ms\": {:.1f}, \"optim_median_ms\": {:.2f}, "
      "\"peak_rss_mib\": {:.0f}}}\n",
      libtorch_adamw ? "torch::optim::AdamW" : "train::build_adamw", vision, text, batch, tokens,
      torch::get_num_threads(), steps, ms_list(fb_ms), ms_list(train_ms), ms_list(opt_ms),
      ms_list(fb_cpu), ms_list(train_cpu),
      median(fb_ms), median(train_ms), median(opt_ms),
      static_cast<double>(util::peak_rss_bytes()) / (1024.0 * 1024.0));
  return 0;
}
