// Loader benchmark: patients/s (two eyes each) through data::Loader from JPEG files
// (decode + fundus crop + resize + augmentation) or from packed shards (augmentation
// only), and the time to pack. One mode per process so peak RSS is per mode.
//
//   bench_loader pack   MANIFEST OUT SIZE THREADS
//   bench_loader jpeg   MANIFEST SIZE BATCH WORKERS BATCHES
//   bench_loader shards DIR      SIZE BATCH WORKERS BATCHES
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "retclip/data/loader.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/util/system.hpp"

using namespace retclip;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int run_loader(std::shared_ptr<const data::SampleSource> src, const std::string& mode,
               int64_t size, int64_t batch, int64_t workers, int64_t batches) {
  data::LoaderOptions o;
  o.batch_size = batch;
  o.image_size = size;
  o.context_length = 100;
  o.workers = workers;
  o.prefetch = 2 * workers + 2;
  o.augment.enabled = true;  // crop scale (0.9, 1), colour jitter 0.2, erasing 0.1
  o.seed = 1;
  // Reports are tokenized by the tokenizer engineer's code in training; the benchmark
  // measures images, so every sample carries a fixed id row.
  data::Loader loader(src, nullptr, o);
  auto get = [&] {
    for (;;) {
      if (auto b = loader.next()) return *b;
    }
  };
  get();  // warm-up: threads started, first batch (not timed)
  double wait_ms = 0;
  const double t0 = now_s();
  for (int64_t k = 0; k < batches; ++k) wait_ms += get().wait_ms;
  const double dt = now_s() - t0;
  const double rate = static_cast<double>(batches * batch) / dt;
  fmt::print("{{\"mode\": \"{}\", \"patients_per_s\": {:.1f}, \"batches\": {}, \"batch\": {}, "
             "\"workers\": {}, \"seconds\": {:.2f}, \"mean_wait_ms\": {:.1f}, "
             "\"peak_rss_mib\": {:.0f}, \"bad_samples\": {}}}\n",
             mode, rate, batches, batch, workers, dt, wait_ms / static_cast<double>(batches),
             static_cast<double>(util::peak_rss_bytes()) / (1 << 20), loader.bad_samples());
  return 0;
}

// Wraps a source and gives every sample a fixed token row (see run_loader).
class FixedTokens final : public data::SampleSource {
 public:
  explicit FixedTokens(std::shared_ptr<data::SampleSource> s) : s_(std::move(s)) {}
  int64_t size() const override { return s_->size(); }
  int64_t image_size() const override { return s_->image_size(); }
  std::string describe(int64_t i) const override { return s_->describe(i); }
  data::DecodedSample load(int64_t i) const override {
    auto d = s_->load(i);
    if (d.tokens.empty()) d.tokens.assign(100, 0);
    return d;
  }

 private:
  std::shared_ptr<data::SampleSource> s_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_loader pack|jpeg|shards ... (see bench_loader.cpp)\n");
    return 2;
  }
  const std::string mode = argv[1];
  try {
    if (mode == "pack" && argc == 6) {
      data::PackOptions o;
      o.manifest = argv[2];
      o.out = argv[3];
      o.image_size = std::stoll(argv[4]);
      o.threads = std::stoll(argv[5]);
      o.shard_size = 1000;
      o.progress = false;
      const double t0 = now_s();
      auto rep = data::pack_dataset(o);
      const double dt = now_s() - t0;
      fmt::print("{{\"mode\": \"pack\", \"patients_per_s\": {:.1f}, \"records\": {}, "
                 "\"seconds\": {:.2f}, \"threads\": {}, \"peak_rss_mib\": {:.0f}}}\n",
                 static_cast<double>(rep.records) / dt, rep.records, dt, o.threads,
                 static_cast<double>(util::peak_rss_bytes()) / (1 << 20));
      return 0;
    }
    if ((mode == "jpeg" || mode == "shards") && argc == 7) {
      const int64_t size = std::stoll(argv[3]), batch = std::stoll(argv[4]),
                    workers = std::stoll(argv[5]), batches = std::stoll(argv[6]);
      std::shared_ptr<data::SampleSource> src;
      if (mode == "jpeg") {
        auto samples = data::read_samples(argv[2], "auto", "", data::BadSamplePolicy::kFail);
        src = data::make_manifest_source(std::move(samples), size);
      } else {
        src = data::make_shard_source(data::ShardReader::open(argv[2]));
      }
      return run_loader(std::make_shared<FixedTokens>(src), mode, size, batch, workers,
                        batches);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "bench_loader: bad arguments (see bench_loader.cpp)\n");
  return 2;
}
