// Multi-threaded data loader: sampler ▸ worker threads (load/decode ▸ augment ▸ tokenize)
// ▸ collate into a Batch, through a bounded, order-deterministic queue. Batch k of an
// epoch has the same content whatever the thread count or timing, and state()/restore()
// resume mid-epoch exactly.
//
//   auto src = data::make_shard_source(data::ShardReader::open("shards/"));
//   data::Loader loader(src, /*tokenizer=*/nullptr, opts);
//   for (int64_t epoch = 0; epoch < E; ++epoch)
//     while (auto b = loader.next()) train_step(b->left, b->right, b->tokens);  // nullopt
//                                                        // ends an epoch; next() starts the next
//                                                        one
//   ckpt.loader = loader.state();  ...  loader.restore(ckpt.loader);
//
// Dimensions: B per-rank batch, H = W = image_size, T context length.
#pragma once

#include <ATen/core/Tensor.h>
#include <opencv2/core.hpp>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "retclip/data/bad_samples.hpp"
#include "retclip/data/image.hpp"
#include "retclip/data/sample.hpp"
#include "retclip/data/sampler.hpp"
#include "retclip/data/shards.hpp"
#include "retclip/data/tokenizer.hpp"

namespace retclip::data {

/// A sample ready for augmentation: uint8 RGB eyes already preprocessed (data.preprocess)
/// to the source size P (data.source_size, else the model's image size).
struct DecodedSample {
  std::string patient_id, report;
  std::string left_report, right_report;  ///< per-eye reports; empty when the data has none
  cv::Mat left, right;                    ///< PxPx3 uint8 RGB; empty = missing eye
  std::vector<int64_t> tokens;            ///< pre-tokenized ids (shards); empty = tokenize `report`
};

/// Where the loader gets samples. load() is called from several threads at once.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual int64_t size() const = 0;
  /// Sample i; throws (naming file and row) when it cannot be loaded.
  virtual DecodedSample load(int64_t i) const = 0;
  /// Where sample i comes from ("manifest.csv row 12", "shards/shard-00001.rcs record 3").
  virtual std::string describe(int64_t i) const = 0;
  /// Pixel size of the images load() returns (0 = decided by the loader's image_size).
  virtual int64_t image_size() const { return 0; }
  /// Patient of sample i, when known without loading it: bad samples are counted per
  /// patient (in the RET-CLIP layout several samples share one patient's images).
  virtual std::string patient_id(int64_t /*i*/) const { return ""; }
};

/// Manifest rows: decode_image(max_pixels) + preprocess_image(image_size, preprocess) on
/// every load.
std::shared_ptr<SampleSource> make_manifest_source(std::vector<Sample> samples, int64_t image_size,
                                                   int64_t max_pixels = kDefaultMaxImagePixels,
                                                   Preprocess preprocess = Preprocess::kFundusCrop);
/// Packed shards: pixels are views into the mmap (no decode, no copy until collate).
std::shared_ptr<SampleSource> make_shard_source(std::shared_ptr<const ShardReader> reader);
/// Pre-decoded samples held in memory (tests, small demos).
std::shared_ptr<SampleSource> make_memory_source(std::vector<DecodedSample> samples);

struct LoaderOptions {
  int64_t batch_size = 32;   ///< per rank
  int64_t image_size = 224;  ///< S, the model input
  int64_t source_size = 0;   ///< P, the source's pixels (0 = image_size); P >= S
  int64_t context_length = 100;
  int64_t workers = 2;   ///< worker threads; 0 = load on the calling thread
  int64_t prefetch = 4;  ///< batches in flight or ready at most (memory bound)
  AugmentParams augment;
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};
  uint64_t seed = 0;
  int64_t rank = 0, world = 1;
  bool shuffle = true;
  bool drop_last = true;
  bool pin_memory = false;  ///< pinned host memory, only when CUDA is available
  BadSamplePolicy policy = BadSamplePolicy::kSkip;
  /// Where every bad sample found while loading is listed (null: only counted and the
  /// first few logged).
  std::shared_ptr<BadSampleLog> bad_log;
};

struct Batch {
  at::Tensor left, right;          ///< [B,3,H,W] float32, zeros for a missing eye
  at::Tensor tokens;               ///< [B,T] int64
  at::Tensor has_left, has_right;  ///< [B] bool
  /// [B,2] int64: per-eye report ids (left, right), equal ids = identical per-eye report
  /// text (62-bit hash); -1 where the sample has no per-eye report (loss.duplicates).
  at::Tensor eye_report_id;
  std::vector<std::string> patient_ids;
  std::vector<int64_t> indices;  ///< sample indices actually used (after replacement)
  int64_t epoch = 0, step_in_epoch = 0;
  double wait_ms = 0;  ///< time next() waited for this batch
};

/// Loader position: the sampler cursor of the next batch next() will return.
using LoaderState = SamplerState;

/// Id of a per-eye report for Batch::eye_report_id: FNV-1a 64 of the text, top two bits
/// cleared (non-negative); -1 for an empty text.
int64_t eye_report_id(const std::string& text);

/// Seed of the augmentation of (epoch, sample index, eye 0 = left / 1 = right).
uint64_t augment_seed(uint64_t seed, int64_t epoch, int64_t index, int eye);

class Loader {
 public:
  /// `tokenizer` may be null when the source carries token ids of length context_length.
  Loader(std::shared_ptr<const SampleSource> source, std::shared_ptr<const Tokenizer> tokenizer,
         LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// The next batch of this rank, or nullopt at the end of an epoch (the call after that
  /// starts the next epoch). Rethrows a worker's error (policy kFail: names file and row).
  std::optional<Batch> next();

  LoaderState state() const;
  /// Drops prefetched batches and continues from `s` (also with another world size).
  void restore(const LoaderState& s);

  int64_t steps_per_epoch() const { return sampler_.steps_per_epoch(); }
  int64_t size() const { return source_->size(); }
  const LoaderOptions& options() const { return opts_; }
  /// Patients found bad so far (policy kSkip replaced their samples); a source without
  /// patient ids counts samples.
  int64_t bad_samples() const;
  /// Most batches ever held at once (in flight + ready); never above prefetch.
  int64_t peak_buffered() const;

 private:
  struct Job {
    int64_t seq, epoch, step;
    std::vector<int64_t> indices, positions;
    std::shared_ptr<const std::vector<int64_t>> perm;
  };
  struct Result {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  void start_workers();
  void stop_workers();
  void worker_loop();
  bool take_job_locked(Job* job);
  Batch build(const Job& job);
  DecodedSample load_or_replace(const Job& job, size_t j, int64_t* used_index);

  std::shared_ptr<const SampleSource> source_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  LoaderOptions opts_;
  DistributedSampler sampler_;  ///< scheduling cursor (guarded by mu_)
  LoaderState returned_;        ///< position of the next batch next() returns

  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_ready_;
  std::vector<std::thread> threads_;
  bool stop_ = false, epoch_active_ = false;
  int64_t next_seq_ = 0;    ///< next job number to schedule
  int64_t return_seq_ = 0;  ///< next job number next() returns
  int64_t in_flight_ = 0, peak_ = 0;
  std::map<int64_t, Result> ready_;

  mutable std::mutex bad_mu_;
  std::set<int64_t> bad_;               ///< sample indices never to load again
  std::set<std::string> bad_patients_;  ///< patients counted as bad
  int64_t bad_count_ = 0;
};

}  // namespace retclip::data
