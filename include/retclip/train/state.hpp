// The run state of training: everything a checkpoint holds besides the weights and the
// optimizer moments (step, skip counters, fp16 loss scaler, data cursor, world size), and
// the only code that writes and reads a training checkpoint's files (their names are in
// io::CheckpointLayout). `retclip export` and `retclip eval` read checkpoints through
// io::open_checkpoint.
//
//   train::TrainState st;
//   if (auto ck = store.resolve(cfg.checkpoint.resume)) st = train::load_checkpoint(*ck, parts,
//   comm);
//   ...  st.count(step_result, cfg.train.max_skipped_steps);
//   train::save_checkpoint(store, st, parts, comm);
//
// Exactness: the checkpoint carries every rank's RNG state, the optimizer moments and the
// sampler cursor, so a resumed run repeats an uninterrupted one bit for bit on CPU.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "retclip/io/checkpoint_store.hpp"
#include "retclip/train/step.hpp"

namespace torch::nn {
class Module;
}  // namespace torch::nn
namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace retclip::train {

struct TrainState {
  int64_t step = 0;               ///< optimizer steps done (skipped ones included)
  int64_t skipped = 0;            ///< non-finite steps skipped in total
  int64_t consecutive_skips = 0;  ///< ... in a row, up to now
  LossScaler scaler;
  nlohmann::json data;     ///< the sampler cursor (TrainData::state)
  int64_t world_size = 1;  ///< ranks of the run that wrote it
  std::string config_hash;

  /// Counts a finished step (++step, skip counters). Throws Error after
  /// `max_consecutive_skips` non-finite steps in a row (train.max_skipped_steps).
  void count(const StepResult& r, int64_t max_consecutive_skips);

  /// trainer.json; from_json throws UsageError naming `origin` and the missing key.
  nlohmann::json to_json() const;
  static TrainState from_json(const nlohmann::json& j, const std::string& origin);
};

/// What a checkpoint holds besides TrainState.
struct CheckpointParts {
  torch::nn::Module& model;
  torch::optim::Optimizer& optimizer;
  at::Device device;
  std::string config_yaml;  ///< the resolved config (config.yaml of the checkpoint)
};

/// Writes checkpoint `state.step`: rank 0 writes weights, optimizer, trainer.json, config
/// and every rank's RNG state (gathered, so other ranks need no write access); then all
/// ranks meet at a barrier. Returns the checkpoint directory (the store's directory on
/// ranks above 0).
std::filesystem::path save_checkpoint(io::CheckpointStore& store, const TrainState& state,
                                      const CheckpointParts& parts, dist::Comm& comm,
                                      int64_t epoch);

/// Loads a checkpoint into `parts` (weights, optimizer, this rank's RNG state) and returns
/// its TrainState. Without a random state for this rank, dropout is reseeded from `seed`
/// and the step (with a warning).
TrainState load_checkpoint(const io::CheckpointInfo& checkpoint, const CheckpointParts& parts,
                           const dist::Comm& comm, uint64_t seed);

/// Keys of the resolved config that differ between the checkpoint and this run and change
/// the numbers (log.* and checkpoint.* are left out): "key: a -> b". A changed run length
/// (train/finetune steps or epochs) is named with what it changes: the learning-rate
/// schedule follows the new length from the resumed step on.
std::vector<std::string> resume_config_changes(const std::string& checkpoint_yaml,
                                               const config::Config& now);

/// Crash-safety test hook: when the environment variable `var` equals `step` (and
/// RETCLIP_FAULT_RANK is unset or this rank), the process kills itself with SIGKILL.
/// RETCLIP_FAULT_KILL_IN_CHECKPOINT fires halfway through that step's checkpoint write,
/// RETCLIP_FAULT_KILL_AFTER_STEP right after that optimizer step.
void fault_point(const char* var, int64_t step);

}  // namespace retclip::train
