// Crash-safe checkpoint store: checkpoints/step-NNNNNNNN/ directories of named files,
// written under a temporary name, fsynced, sealed by a COMPLETE marker (sizes,
// CRC-32s, config hash) written last, then renamed into place. See docs/CHECKPOINTS.md.
//
//   train::CheckpointStore store(run_dir / "checkpoints",
//                                train::CheckpointStore::options_from(cfg.checkpoint, hash));
//   store.save(step, {train::CheckpointFile::bytes("trainer.json", state.dump()),
//                     train::CheckpointFile::writer("optimizer.pt", [&](const fs::path& p) {
//                       train::save_optimizer_state(*opt, p); })});
//   if (auto ckpt = store.resolve(cfg.checkpoint.resume)) load_from(*ckpt);
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"

namespace retclip::train {

/// One file of a checkpoint: either bytes, or a function that writes the file at the
/// path it is given (for writers that want a path: torch::save, safetensors, ...).
struct CheckpointFile {
  std::string name;  ///< plain file name inside the checkpoint directory (no '/')
  std::function<void(const std::filesystem::path&)> write;

  static CheckpointFile bytes(std::string name, std::string data);
  static CheckpointFile writer(std::string name,
                               std::function<void(const std::filesystem::path&)> fn);
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
  std::filesystem::path path;   ///< .../checkpoints/step-NNNNNNNN
  double time = 0;              ///< Unix seconds when it was sealed
  std::string config_hash;
  std::vector<CheckpointFileRecord> files;
  nlohmann::json meta;          ///< what the caller passed to save() (object or null)
};

/// Result of verify(): ok, or the reason the checkpoint is unusable.
struct CheckpointCheck {
  bool ok = false;
  std::string reason;           ///< empty when ok
  std::optional<CheckpointInfo> info;
};

class CheckpointStore {
 public:
  struct Options {
    int64_t keep_last = 3;   ///< newest complete checkpoints kept; <= 0 keeps all
    int64_t keep_every = 0;  ///< steps that are multiples of this are kept for good; 0 = none
    std::string config_hash; ///< recorded in every COMPLETE marker
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

  /// `resume`: "" -> nullopt; "auto" -> latest_complete() (nullopt when none);
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

}  // namespace retclip::train
