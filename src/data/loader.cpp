// Loader: worker threads fill batch slots numbered by job sequence, next() hands them out
// in sequence order, so content never depends on timing. Also the sample sources
// (manifest rows decoded on the fly, or packed shards).
#include "retclip/data/loader.hpp"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <chrono>

#include "retclip/data/manifest.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"

namespace retclip::data {

namespace {

constexpr int64_t kMaxBadLogged = 5;

class ManifestSource final : public SampleSource {
 public:
  ManifestSource(std::vector<Sample> s, int64_t size, int64_t max_pixels, Preprocess pre)
      : samples_(std::move(s)), size_(size), max_pixels_(max_pixels), pre_(pre) {}
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  int64_t image_size() const override { return size_; }
  std::string describe(int64_t i) const override {
    const Sample& s = samples_.at(static_cast<size_t>(i));
    return s.origin.empty() ? str_cat("sample ", i, " (patient ", s.patient_id, ")") : s.origin;
  }
  std::string patient_id(int64_t i) const override {
    return samples_.at(static_cast<size_t>(i)).patient_id;
  }
  DecodedSample load(int64_t i) const override {
    const Sample& s = samples_.at(static_cast<size_t>(i));
    DecodedSample d;
    d.patient_id = s.patient_id;
    d.report = s.report;
    d.left_report = s.left_report;
    d.right_report = s.right_report;
    RETCLIP_CHECK_USAGE(s.left.present() || s.right.present(), describe(i),
                        ": both eyes are missing");
    if (s.left.present())
      d.left =
          preprocess_image(decode_image(s.left, max_pixels_), size_, pre_, describe(i) + " (left)");
    if (s.right.present())
      d.right = preprocess_image(decode_image(s.right, max_pixels_), size_, pre_,
                                 describe(i) + " (right)");
    return d;
  }

 private:
  std::vector<Sample> samples_;
  int64_t size_;
  int64_t max_pixels_;
  Preprocess pre_;
};

class ShardSource final : public SampleSource {
 public:
  explicit ShardSource(std::shared_ptr<const ShardReader> r) : reader_(std::move(r)) {}
  int64_t size() const override { return reader_->size(); }
  int64_t image_size() const override { return reader_->image_size(); }
  std::string describe(int64_t i) const override { return reader_->describe(i); }
  DecodedSample load(int64_t i) const override {
    ShardRecordView v = reader_->record(i);
    DecodedSample d;
    d.patient_id = std::string(v.patient_id);
    d.report = std::string(v.report);
    d.left_report = v.label_value("left_report");
    d.right_report = v.label_value("right_report");
    d.left = v.left_mat();
    d.right = v.right_mat();
    d.tokens = v.tokens();
    return d;
  }

 private:
  std::shared_ptr<const ShardReader> reader_;
};

class MemorySource final : public SampleSource {
 public:
  explicit MemorySource(std::vector<DecodedSample> s) : samples_(std::move(s)) {}
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  std::string describe(int64_t i) const override {
    return str_cat("in-memory sample ", i, " (patient ", samples_.at(i).patient_id, ")");
  }
  DecodedSample load(int64_t i) const override {
    const DecodedSample& s = samples_.at(static_cast<size_t>(i));
    RETCLIP_CHECK_USAGE(!s.left.empty() || !s.right.empty(), describe(i),
                        ": both eyes are missing");
    return s;  // cv::Mat copies share pixels
  }

 private:
  std::vector<DecodedSample> samples_;
};

SamplerOptions sampler_options(int64_t n, const LoaderOptions& o) {
  SamplerOptions s;
  s.dataset_size = n;
  s.batch_size = o.batch_size;
  s.rank = o.rank;
  s.world = o.world;
  s.seed = o.seed;
  s.shuffle = o.shuffle;
  s.drop_last = o.drop_last;
  return s;
}

}  // namespace

std::shared_ptr<SampleSource> make_manifest_source(std::vector<Sample> samples, int64_t image_size,
                                                   int64_t max_pixels, Preprocess preprocess) {
  return std::make_shared<ManifestSource>(std::move(samples), image_size, max_pixels, preprocess);
}
std::shared_ptr<SampleSource> make_shard_source(std::shared_ptr<const ShardReader> reader) {
  return std::make_shared<ShardSource>(std::move(reader));
}
std::shared_ptr<SampleSource> make_memory_source(std::vector<DecodedSample> samples) {
  return std::make_shared<MemorySource>(std::move(samples));
}

int64_t eye_report_id(const std::string& text) {
  if (text.empty()) return -1;
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<int64_t>(h >> 2);
}

uint64_t augment_seed(uint64_t seed, int64_t epoch, int64_t index, int eye) {
  return mix_seed(
      mix_seed(mix_seed(seed, static_cast<uint64_t>(epoch)), static_cast<uint64_t>(index)),
      static_cast<uint64_t>(eye));
}

// ---------------------------------------------------------------------------------
// Loader

Loader::Loader(std::shared_ptr<const SampleSource> source,
               std::shared_ptr<const Tokenizer> tokenizer, LoaderOptions options)
    : source_(std::move(source)),
      tokenizer_(std::move(tokenizer)),
      opts_(options),
      sampler_(sampler_options(source_ ? source_->size() : 0, options)) {
  RETCLIP_CHECK(source_, "Loader: no sample source");
  RETCLIP_CHECK_USAGE(opts_.prefetch >= 1, "expected data.prefetch >= 1 but got ", opts_.prefetch);
  RETCLIP_CHECK_USAGE(opts_.workers >= 0, "expected data.workers >= 0 but got ", opts_.workers);
  RETCLIP_CHECK_USAGE(opts_.context_length > 0, "expected a positive context length but got ",
                      opts_.context_length);
  if (opts_.source_size == 0) opts_.source_size = opts_.image_size;
  RETCLIP_CHECK_USAGE(opts_.source_size >= opts_.image_size, "expected data.source_size (",
                      opts_.source_size, ") >= data.image_size (", opts_.image_size, ")");
  const int64_t src_size = source_->image_size();
  RETCLIP_CHECK_USAGE(src_size == 0 || src_size == opts_.source_size, "the data holds ", src_size,
                      " px images but the loader expects ", opts_.source_size, " px sources for ",
                      opts_.image_size,
                      " px model inputs. HINT: repack the "
                      "shards with --size ",
                      opts_.source_size, ", or set data.source_size to ", src_size,
                      " (a source larger than data.image_size is cropped and resized "
                      "to it)");
  returned_ = sampler_.state();
}

Loader::~Loader() {
  stop_workers();
}

void Loader::start_workers() {
  if (!threads_.empty() || opts_.workers == 0) return;
  stop_ = false;
  for (int64_t t = 0; t < opts_.workers; ++t) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  stop_ = false;
}

bool Loader::take_job_locked(Job* job) {
  if (!epoch_active_ || !sampler_.has_batch_at(sampler_.state().consumed)) return false;
  if (next_seq_ - return_seq_ >= opts_.prefetch) return false;  // bound: in flight + ready
  const SamplerState st = sampler_.state();
  job->seq = next_seq_++;
  job->epoch = st.epoch;
  job->step = st.consumed / sampler_.global_batch();
  job->perm = sampler_.permutation(st.epoch);
  job->indices = *sampler_.next(&job->positions);
  in_flight_ += 1;
  peak_ = std::max<int64_t>(peak_, next_seq_ - return_seq_);
  return true;
}

void Loader::worker_loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return stop_ || take_job_locked(&job); });
      if (stop_) {
        // A job taken just now is simply dropped: restore() or the destructor discards it.
        return;
      }
    }
    Result res;
    try {
      res.batch = build(job);
    } catch (...) {
      res.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      in_flight_ -= 1;
      ready_[job.seq] = std::move(res);
    }
    cv_ready_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  const auto t0 = std::chrono::steady_clock::now();
  Result res;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (!epoch_active_) {
      epoch_active_ = true;
      sampler_.set_state(returned_);
    }
    if (opts_.workers == 0) {
      Job job;
      if (!take_job_locked(&job)) {
        epoch_active_ = false;
        returned_ = {returned_.epoch + 1, 0};
        sampler_.set_state(returned_);
        return std::nullopt;
      }
      lk.unlock();
      Batch b = build(job);  // errors propagate directly
      lk.lock();
      in_flight_ -= 1;
      return_seq_ += 1;
      returned_.consumed += sampler_.global_batch();
      b.wait_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      return b;
    }
    start_workers();
    cv_work_.notify_all();
    cv_ready_.wait(lk, [&] {
      return ready_.count(return_seq_) > 0 ||
             (return_seq_ == next_seq_ && !sampler_.has_batch_at(sampler_.state().consumed));
    });
    auto it = ready_.find(return_seq_);
    if (it == ready_.end()) {  // every batch of the epoch was returned
      epoch_active_ = false;
      returned_ = {returned_.epoch + 1, 0};
      sampler_.set_state(returned_);
      return std::nullopt;
    }
    res = std::move(it->second);
    ready_.erase(it);
    return_seq_ += 1;
    returned_.consumed += sampler_.global_batch();
  }
  cv_work_.notify_all();  // a slot is free
  if (res.error) std::rethrow_exception(res.error);
  res.batch->wait_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return std::move(res.batch);
}

LoaderState Loader::state() const {
  std::lock_guard<std::mutex> lk(mu_);
  return returned_;
}

void Loader::restore(const LoaderState& s) {
  stop_workers();
  std::lock_guard<std::mutex> lk(mu_);
  sampler_.set_state(s);
  returned_ = s;
  ready_.clear();
  in_flight_ = 0;
  next_seq_ = return_seq_ = 0;
  epoch_active_ = false;
}

int64_t Loader::bad_samples() const {
  std::lock_guard<std::mutex> lk(bad_mu_);
  return bad_count_;
}

int64_t Loader::peak_buffered() const {
  std::lock_guard<std::mutex> lk(mu_);
  return peak_;
}

DecodedSample Loader::load_or_replace(const Job& job, size_t j, int64_t* used) {
  const int64_t n = source_->size();
  const auto& perm = *job.perm;
  // A bad sample is replaced from outside the global batch (all ranks' samples of this
  // step), so that it never becomes a second copy of a patient already in the batch (a
  // false negative): the sample in the same slot of the next global batch, then the
  // slots after it, all in the epoch's order. Which samples are bad is a property of the
  // data, so the replacement is the same on every run and on resume.
  const int64_t g = sampler_.global_batch(), start = job.step * g;
  std::set<int64_t> in_batch;  // filled at the first failure only
  int64_t outside = 0;
  const int64_t slot = job.positions[j] - start;
  auto candidate = [&](int64_t k) -> int64_t {  // k = 0: the sample itself
    if (k == 0) return job.indices[j];
    if (in_batch.empty()) {
      for (int64_t q = 0; q < std::min(g, n); ++q) in_batch.insert(perm[(start + q) % n]);
      outside = n - static_cast<int64_t>(in_batch.size());
    }
    if (k <= outside) {
      // Walk the positions after the batch, starting at this slot's, skipping samples of
      // the batch (a last batch padded by wrap-around holds early positions again).
      for (int64_t off = (slot + k - 1) % outside, seen = 0; seen < n; ++seen, ++off) {
        const int64_t idx = perm[(start + g + off) % n];
        if (!in_batch.count(idx)) return idx;
      }
    }
    // Every sample outside the batch was tried: the batch's own, as a last resort.
    return perm[(job.positions[j] + (k - outside)) % n];
  };
  for (int64_t k = 0; k == 0 || k < n + outside; ++k) {
    const int64_t idx = candidate(k);
    {
      std::lock_guard<std::mutex> lk(bad_mu_);
      if (bad_.count(idx)) continue;
    }
    try {
      DecodedSample d = source_->load(idx);
      *used = idx;
      return d;
    } catch (const std::exception& e) {
      const std::string pid = source_->patient_id(idx);
      if (opts_.policy == BadSamplePolicy::kFail) {
        if (opts_.bad_log) opts_.bad_log->add({source_->describe(idx), e.what(), pid});
        throw UsageError(str_cat("bad sample at ", source_->describe(idx), ": ", e.what(),
                                 ". HINT: fix or remove it, or set data.on_bad_sample: skip"));
      }
      std::lock_guard<std::mutex> lk(bad_mu_);
      if (!bad_.insert(idx).second) continue;
      // Several samples of one patient (one per text naming it) are one bad sample.
      if (!pid.empty() && !bad_patients_.insert(pid).second) continue;
      ++bad_count_;
      if (opts_.bad_log) opts_.bad_log->add({source_->describe(idx), e.what(), pid});
      if (bad_count_ <= kMaxBadLogged) {
        std::string more;
        if (bad_count_ == kMaxBadLogged)
          more = opts_.bad_log ? str_cat(" (further bad samples are counted and listed in ",
                                         opts_.bad_log->path(), ")")
                               : std::string(" (further bad samples are only counted)");
        log::warn(
            "skipping bad sample {} ({}); it is replaced by a sample from outside the "
            "batch{}",
            source_->describe(idx), e.what(), more);
      }
    }
  }
  throw UsageError(str_cat("every one of the ", n,
                           " samples failed to load (first: ", source_->describe(job.indices[j]),
                           "). HINT: check the image paths of the manifest"));
}

Batch Loader::build(const Job& job) {
  const int64_t B = static_cast<int64_t>(job.indices.size()), S = opts_.image_size,
                T = opts_.context_length;
  auto fopts = at::TensorOptions().dtype(at::kFloat);
  auto iopts = at::TensorOptions().dtype(at::kLong);
  auto bopts = at::TensorOptions().dtype(at::kBool);
  if (opts_.pin_memory && torch::cuda::is_available()) {
    fopts = fopts.pinned_memory(true);
    iopts = iopts.pinned_memory(true);
    bopts = bopts.pinned_memory(true);
  }
  Batch b;
  b.left = at::empty({B, 3, S, S}, fopts);
  b.right = at::empty({B, 3, S, S}, fopts);
  b.tokens = at::empty({B, T}, iopts);
  b.has_left = at::zeros({B}, bopts);
  b.has_right = at::zeros({B}, bopts);
  b.eye_report_id = at::empty({B, 2}, iopts);
  b.epoch = job.epoch;
  b.step_in_epoch = job.step;
  b.patient_ids.resize(static_cast<size_t>(B));
  b.indices.resize(static_cast<size_t>(B));
  auto* hl = b.has_left.data_ptr<bool>();
  auto* hr = b.has_right.data_ptr<bool>();
  auto* tk = b.tokens.data_ptr<int64_t>();
  auto* er = b.eye_report_id.data_ptr<int64_t>();
  const int64_t P = opts_.source_size;
  for (int64_t j = 0; j < B; ++j) {
    int64_t idx = 0;
    DecodedSample d = load_or_replace(job, static_cast<size_t>(j), &idx);
    b.indices[j] = idx;
    b.patient_ids[j] = d.patient_id;
    auto eye = [&](const cv::Mat& m, int which, at::Tensor& dst, bool* flag) {
      if (m.empty()) {
        dst[j].zero_();
        return;
      }
      RETCLIP_CHECK(m.rows == P && m.cols == P, source_->describe(idx), ": expected ", P, "x", P,
                    " px but got ", m.cols, "x", m.rows);
      dst[j].copy_(to_tensor(m, opts_.augment, augment_seed(opts_.seed, job.epoch, idx, which),
                             opts_.mean, opts_.std, S));
      flag[j] = true;
    };
    eye(d.left, 0, b.left, hl);
    eye(d.right, 1, b.right, hr);
    er[2 * j] = eye_report_id(d.left_report);
    er[2 * j + 1] = eye_report_id(d.right_report);
    std::vector<int64_t> ids;
    if (!d.tokens.empty() && static_cast<int64_t>(d.tokens.size()) == T) {
      ids = std::move(d.tokens);
    } else {
      RETCLIP_CHECK_USAGE(tokenizer_, source_->describe(idx), ": the data carries ",
                          d.tokens.size(), " token ids per report, not context length ", T,
                          ", and no tokenizer was given. HINT: pass the tokenizer or repack "
                          "the shards with --context ",
                          T);
      ids = tokenizer_->encode(d.report, T);
    }
    std::copy(ids.begin(), ids.end(), tk + j * T);
  }
  return b;
}

}  // namespace retclip::data
