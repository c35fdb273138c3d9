// The trainer's view of its data: the training loader (crossing epochs on its own),
// the validation split (one ordered pass per evaluation), the tokenizer, and the
// position to checkpoint. Sources: packed shards (a directory with index.json) or a
// manifest / RET-CLIP directory decoded on the fly.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "retclip/config/config.hpp"
#include "retclip/data/loader.hpp"
#include "retclip/train/step.hpp"
#include "retclip/train/validate.hpp"

namespace retclip::train {

class TrainData {
 public:
  /// Opens data.train (and data.val when set) as configured, for this rank. Manifest
  /// and RET-CLIP data are pre-checked (every image's file and header) before this
  /// returns: data.on_bad_sample fail throws naming the first bad row. Every bad sample,
  /// found now or later by the loaders, is listed in <run_dir>/bad_samples.tsv
  /// (bad_samples.rank<r>.tsv on rank r > 0); an empty run_dir means log.dir.
  static TrainData open(const config::Config& cfg, int64_t rank, int64_t world,
                        const std::string& run_dir = "");
  /// Opens only `path` as an evaluation split (no training loader).
  static TrainData open_eval(const config::Config& cfg, const std::string& path);

  std::string describe() const;
  /// The tokenizer of the reports (data.tokenizer.path, or the one the shards record);
  /// nullptr when the data carries token ids and none is configured.
  const data::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  /// Vocabulary of the tokenizer (0 when none is loaded: shards with ids, no tokenizer).
  int64_t vocab_size() const;
  int64_t size() const;
  int64_t steps_per_epoch() const;
  /// The next training batch on `device` (a new epoch starts when one ends).
  MicroBatch next_train(const at::Device& device);
  /// Sampler position of the next training batch (world-size independent).
  nlohmann::json state() const;
  void restore(const nlohmann::json& s);
  /// Training samples found bad so far by the loader (replaced under policy skip).
  int64_t bad_samples() const;
  /// The bad_samples.tsv of this run ("" for evaluation data).
  std::string bad_sample_list() const;

  bool has_val() const { return val_ != nullptr; }
  int64_t val_size() const;
  /// One ordered pass over the validation split, batches on `device`.
  BatchSource val_source(const at::Device& device);

 private:
  std::shared_ptr<const data::Tokenizer> tokenizer_;
  std::shared_ptr<data::BadSampleLog> bad_log_;
  std::unique_ptr<data::Loader> train_, val_;
  std::string train_desc_, val_desc_;
};

}  // namespace retclip::train
