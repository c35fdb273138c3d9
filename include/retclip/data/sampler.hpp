// Distributed-aware sampler: one permutation per epoch from (seed, epoch), identical on
// every rank; global batch k = perm[k*G, (k+1)*G) with G = world * batch_size, and
// rank r takes perm[k*G + r*B, k*G + (r+1)*B). The cursor is counted in *global* samples
// so a checkpoint taken with one world size resumes with another.
//
//   data::DistributedSampler s({.dataset_size = n, .batch_size = 32, .rank = r, .world = w});
//   while (auto idx = s.next()) { ... }   // nullopt at the end of the epoch; next() then
//                                          // starts epoch + 1
//   data::SamplerState st = s.state();    // (epoch, global samples consumed)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace retclip::data {

struct SamplerOptions {
  int64_t dataset_size = 0;
  int64_t batch_size = 1;  ///< per rank (B); the global batch is world * B
  int64_t rank = 0;
  int64_t world = 1;
  uint64_t seed = 0;
  bool shuffle = true;
  bool drop_last = true;  ///< false: the last global batch is filled by wrapping around
};

/// Position in the data stream, independent of the world size.
struct SamplerState {
  int64_t epoch = 0;
  int64_t consumed = 0;  ///< global samples already handed out in this epoch
  bool operator==(const SamplerState& o) const {
    return epoch == o.epoch && consumed == o.consumed;
  }
};

/// splitmix64 finaliser; used to derive per-(seed, epoch, index, eye) seeds.
uint64_t mix_seed(uint64_t a, uint64_t b);

/// Deterministic permutation of [0, n): std::mt19937_64 seeded with mix_seed(seed, epoch)
/// and a hand-written Fisher-Yates (not std::shuffle, whose algorithm is unspecified), so
/// every platform and standard library gives the same order.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

class DistributedSampler {
 public:
  explicit DistributedSampler(SamplerOptions options);

  const SamplerOptions& options() const { return opts_; }
  int64_t global_batch() const { return opts_.batch_size * opts_.world; }
  /// Global batches in a full epoch: floor(N/G) with drop_last, else ceil(N/G).
  int64_t steps_per_epoch() const;
  /// Index of the next batch within the epoch (consumed / G).
  int64_t step_in_epoch() const { return state_.consumed / global_batch(); }

  /// This rank's indices of the next global batch, or nullopt when the epoch is
  /// exhausted (the state then moves to (epoch + 1, 0)).
  std::optional<std::vector<int64_t>> next();
  /// Like next() but also returns the permutation positions (p, before wrapping mod N)
  /// that the indices came from; the loader uses them to replace bad samples.
  std::optional<std::vector<int64_t>> next(std::vector<int64_t>* positions);

  /// This rank's indices of the global batch starting at global position `start` of
  /// `epoch`'s permutation (no state change).
  std::vector<int64_t> indices_at(int64_t epoch, int64_t start,
                                  std::vector<int64_t>* positions = nullptr) const;
  /// Whether a global batch starting at `start` exists in an epoch.
  bool has_batch_at(int64_t start) const;

  /// The epoch's permutation (cached; identity when shuffle is off).
  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch) const;

  SamplerState state() const { return state_; }
  /// Continues at the same global sample position. With another world size or batch
  /// size than the one that saved it, batches restart at `consumed` (a position that
  /// need not be a multiple of the new G).
  void set_state(const SamplerState& s);

 private:
  SamplerOptions opts_;
  SamplerState state_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::shared_ptr<const std::vector<int64_t>> cached_perm_;
};

}  // namespace retclip::data
