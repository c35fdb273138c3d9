// bench_model: times one training step (forward, tripartite loss, backward) of RetClip
// on CPU and prints one JSON line (ms/step, peak RSS). scripts/bench_model.sh runs it
// next to bench/bench_model.py (PyTorch eager) with the same sizes and threads.
//
//   bench_model VISION_PRESET TEXT_PRESET VOCAB BATCH TOKENS THREADS STEPS
#include <fmt/format.h>

#include <chrono>
#include <iostream>
#include <string>

#include "retclip/loss/tripartite.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/system.hpp"

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
  util::configure_threads(threads);
  torch::manual_seed(0);
  auto v = model::vision_preset(vision);
  model::RetClip net(model::RetClipOptions()
                         .vision(v)
                         .text(model::text_preset(text, vocab))
                         .embed_dim(v.embed_dim()));
  net->train();
  const int64_t s = v.image_size();
  auto left = torch::randn({batch, 3, s, s}), right = torch::randn({batch, 3, s, s});
  auto tok = torch::randint(1, vocab, {batch, tokens}, torch::kLong);
  const loss::TripartiteLossOptions lopts;
  auto step = [&] {
    net->zero_grad();
    auto e = net->forward(left, right, tok);
    auto out = loss::tripartite_loss(e, lopts);
    out.total.backward();
    return out.total.item<double>();
  };
  step();  // warm-up (allocator, oneDNN primitives), not timed
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      static_cast<double>(steps);
  fmt::print(
      "{{\"impl\": \"retclip-cpp\", \"vision\": \"{}\", \"text\": \"{}\", \"batch\": {}, "
      "\"tokens\": {}, \"threads\": {}, \"steps\": {}, \"ms_per_step\": {:.1f}, "
      "\"peak_rss_mib\": {:.0f}}}\n",
      vision, text, batch, tokens, torch::get_num_threads(), steps, ms,
      static_cast<double>(util::peak_rss_bytes()) / (1024.0 * 1024.0));
  return 0;
}
