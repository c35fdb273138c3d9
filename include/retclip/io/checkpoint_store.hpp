// Crash-safe checkpoint store: checkpoints/step-NNNNNNNN/ directories of named files,
// written under a temporary name, fsynced, sealed by a COMPLETE marker (sizes,
// CRC-32s, config hash) written last, then renamed into place. See docs/CHECKPOINTS.md.
//
// The store knows directories and markers, not what the files hold; the names of a
// training checkpoint's files are in CheckpointLayout, written by train::TrainState.
//
//   io::CheckpointStore store(run_dir / "checkpoints",
//                             io::CheckpointStore::options_from(cfg.checkpoint, hash));
//   store.save(step, {io::CheckpointFile::bytes(io::CheckpointLayout::kTrainerState, json),
//                     io::CheckpointFile::writer(io::CheckpointLayout::kOptimizer,
//                                                [&](const fs::path& p) { save(p); })});
//   if (auto ckpt = store.resolve(cfg.checkpoint.resume)) load_from(*ckpt);
//   io::CheckpointContents c = io::open_checkpoint("runs/demo");   // export, eval
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"

namespace retclip::io {

/// One file of a checkpoint: either bytes, or a function that writes the file at the
/// path it is given (for writers that want a path: torch::save, safetensors, ...).
struct CheckpointFile {
  std::string name;  ///< plain file name inside the checkpoint directory (no '/')
  std::function<void(const std::filesystem::path&)> write;

  static CheckpointFile bytes(std::string name, std::string data);
  static CheckpointFile writer(std::string name,
                               std::function<void(const std::filesystem::path&)> fn);
};

/// The files of a retclip training checkpoint directory (train::TrainState writes them;
/// export, eval and the CLI find them through these names).
struct CheckpointLayout {
  static constexpr const char* kWeights = "model.safetensors";  ///< model state dict
  static constexpr const char* kOptimizer = "optimizer.pt";     ///< AdamW moments
  static constexpr const char* kTrainerState = "trainer.json";  ///< step, scaler, data cursor
  static constexpr const char* kConfig = "config.yaml";         ///< resolved config
  /// Random state of a rank: rng_<kind>.bin for rank 0, rng_<kind>.rank<r>.bin for others
  /// (kind: cpu, cuda).
  static std::string rng_file(const std::string& kind, int rank);
};

/// A file as recorded in the COMPLETE marker.
struct CheckpointFileRecord {
  std::string name;
  int64_t size = 0;
  uint32_t crc32 = 0;  ///< util::crc32 of the whole file
};

/// A complete checkpoint (its COMPLETE marker parsed).
struct CheckpointInfo {
  int64_t step = 0;
  std::filesystem::path path;  ///< .../checkpoints/step-NNNNNNNN
  double time = 0;             ///< Unix seconds when it was sealed
  std::string config_hash;
  std::vector<CheckpointFileRecord> files;
  nlohmann::json meta;  ///< what the caller passed to save() (object or null)
};

/// Result of verify(): ok, or the reason the checkpoint is unusable.
struct CheckpointCheck {
  bool ok = false;
  std::string reason;  ///< empty when ok
  std::optional<CheckpointInfo> info;
};

class CheckpointStore {
 public:
  struct Options {
    int64_t keep_last = 3;    ///< newest complete checkpoints kept; <= 0 keeps all
    int64_t keep_every = 0;   ///< steps that are multiples of this are kept for good; 0 = none
    std::string config_hash;  ///< recorded in every COMPLETE marker
  };

  /// Name of the marker file written last.
  static constexpr const char* kMarker = "COMPLETE";

  static Options options_from(const config::CheckpointConfig& cfg, std::string config_hash);
  /// "step-00000042" (8 digits, more when the step needs them).
  static std::string dir_name(int64_t step);
  /// Step of a "step-N" directory name; nullopt for anything else (tmp dirs included).
  static std::optional<int64_t> parse_dir_name(const std::string& name);

  /// The directory is created on the first save.
  CheckpointStore(std::filesystem::path dir, Options options);

  /// Writes checkpoint `step` and returns its final path. Steps: remove leftover
  /// *.tmp-* directories; write every file into step-N.tmp-<pid>/ and fsync it; write
  /// and fsync COMPLETE (JSON: format, version, step, time, config_hash, files with
  /// size and crc32, meta); rename to step-N (an existing step-N is replaced); fsync
  /// the parent; prune. Throws Error naming the file when a write fails (the tmp
  /// directory is removed, earlier checkpoints are untouched).
  std::filesystem::path save(int64_t step, const std::vector<CheckpointFile>& files,
                             const nlohmann::json& meta = nullptr);

  /// Checkpoints whose COMPLETE marker parses and names this step, sorted by step
  /// (ascending). Does not read file contents (see verify / latest_complete).
  std::vector<CheckpointInfo> list() const;

  /// Newest checkpoint that passes verify(); each newer broken one is skipped with a
  /// log::warn naming it and why. nullopt when there is none.
  std::optional<CheckpointInfo> latest_complete() const;

  /// `resume`: "" -> nullopt; "auto" -> latest_complete(), nullopt when the directory
  /// holds no step-N directory at all, UsageError listing them when every one is broken;
  /// "auto-or-scratch" -> as auto, but nullopt (start fresh) when all are broken;
  /// otherwise a path: a checkpoint directory (must verify) or a checkpoints directory
  /// (its latest complete one). Throws UsageError with a HINT when the path is missing
  /// or broken.
  std::optional<CheckpointInfo> resolve(const std::string& resume) const;

  /// Full check of one checkpoint directory: marker present and valid JSON, step matches
  /// the directory name, every listed file present with the recorded size and CRC-32.
  static CheckpointCheck verify(const std::filesystem::path& path);

  /// Deletes complete checkpoints outside the keep policy: the newest keep_last, every
  /// step that is a multiple of keep_every, and `protect` are kept. Directories without
  /// a valid marker are left alone. Returns the removed paths. Called by save().
  std::vector<std::filesystem::path> prune(int64_t protect);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  void remove_leftovers() const;

  std::filesystem::path dir_;
  Options options_;
};

/// A verified training checkpoint as export and eval read it.
struct CheckpointContents {
  std::filesystem::path dir;  ///< the step-NNNNNNNN directory
  int64_t step = 0;
  std::filesystem::path weights;  ///< dir / CheckpointLayout::kWeights
  std::string config_yaml;        ///< the resolved config the run trained with
};

/// Resolves a step-N directory from a checkpoint, checkpoints or run directory (the
/// newest complete checkpoint); UsageError with a HINT when there is none or it is broken.
std::filesystem::path resolve_checkpoint_dir(const std::string& path);

/// resolve_checkpoint_dir, then the step, weights path and config of that checkpoint.
CheckpointContents open_checkpoint(const std::string& path);

}  // namespace retclip::io
