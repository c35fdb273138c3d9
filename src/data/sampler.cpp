// DistributedSampler: per-epoch deterministic shuffle and each rank's share of every
// global batch, with a world-size independent cursor.
#include "retclip/data/sampler.hpp"

#include <random>

#include "retclip/util/error.hpp"

namespace retclip::data {

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 rng(mix_seed(seed, static_cast<uint64_t>(epoch)));
  // Fisher-Yates from the back; modulo bias is below n / 2^64.
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

DistributedSampler::DistributedSampler(SamplerOptions o) : opts_(o) {
  RETCLIP_CHECK_USAGE(o.dataset_size > 0, "sampler: expected a non-empty dataset but got ",
                      o.dataset_size, " samples. HINT: check the manifest / shard set");
  RETCLIP_CHECK_USAGE(o.batch_size > 0, "sampler: expected a positive per-rank batch size "
                      "but got ", o.batch_size, " (key data.batch_size)");
  RETCLIP_CHECK_USAGE(o.world > 0 && o.rank >= 0 && o.rank < o.world,
                      "sampler: expected 0 <= rank < world but got rank ", o.rank,
                      " and world ", o.world);
  RETCLIP_CHECK_USAGE(!o.drop_last || o.dataset_size >= global_batch(),
                      "sampler: the dataset has ", o.dataset_size,
                      " samples, fewer than one global batch of ", global_batch(), " (", o.world,
                      " ranks x ", o.batch_size,
                      "), so drop_last leaves nothing. HINT: lower the batch size");
}

int64_t DistributedSampler::steps_per_epoch() const {
  const int64_t n = opts_.dataset_size, g = global_batch();
  return opts_.drop_last ? n / g : (n + g - 1) / g;
}

bool DistributedSampler::has_batch_at(int64_t start) const {
  return opts_.drop_last ? start + global_batch() <= opts_.dataset_size
                         : start < opts_.dataset_size;
}

std::shared_ptr<const std::vector<int64_t>> DistributedSampler::permutation(int64_t epoch) const {
  if (cached_epoch_ != epoch || !cached_perm_) {
    std::vector<int64_t> p;
    if (opts_.shuffle) {
      p = epoch_permutation(opts_.dataset_size, opts_.seed, epoch);
    } else {
      p.resize(static_cast<size_t>(opts_.dataset_size));
      for (int64_t i = 0; i < opts_.dataset_size; ++i) p[i] = i;
    }
    cached_perm_ = std::make_shared<const std::vector<int64_t>>(std::move(p));
    cached_epoch_ = epoch;
  }
  return cached_perm_;
}

std::vector<int64_t> DistributedSampler::indices_at(int64_t epoch, int64_t start,
                                                    std::vector<int64_t>* positions) const {
  auto perm = permutation(epoch);
  const int64_t n = opts_.dataset_size, b = opts_.batch_size;
  std::vector<int64_t> out(static_cast<size_t>(b));
  if (positions) positions->resize(static_cast<size_t>(b));
  for (int64_t j = 0; j < b; ++j) {
    const int64_t pos = start + opts_.rank * b + j;
    out[j] = (*perm)[pos % n];  // wraps only when !drop_last pads the final batch
    if (positions) (*positions)[j] = pos;
  }
  return out;
}

std::optional<std::vector<int64_t>> DistributedSampler::next() { return next(nullptr); }

std::optional<std::vector<int64_t>> DistributedSampler::next(std::vector<int64_t>* positions) {
  if (!has_batch_at(state_.consumed)) {
    state_ = {state_.epoch + 1, 0};
    return std::nullopt;
  }
  auto idx = indices_at(state_.epoch, state_.consumed, positions);
  state_.consumed += global_batch();
  return idx;
}

void DistributedSampler::set_state(const SamplerState& s) {
  RETCLIP_CHECK_USAGE(s.epoch >= 0 && s.consumed >= 0, "sampler: invalid state (epoch ",
                      s.epoch, ", consumed ", s.consumed, "). HINT: the checkpoint is corrupt");
  state_ = s;
}

}  // namespace retclip::data
