// Run set-up shared by `retclip train`, `retclip finetune` and `retclip bench`, so that
// they time and train the same model: the run (directory, logging, device, process
// group) and the seeded model with its pretrained towers and frozen parts.
//
//   train::Run run = train::open_run(cfg, "train", cfg.train.precision);
//   model::RetClip net = train::build_model(cfg, data.vocab_size(), device, comm->rank());
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "retclip/config/config.hpp"
#include "retclip/dist/env.hpp"
#include "retclip/model/retclip.hpp"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace retclip::dist {
class Comm;
}  // namespace retclip::dist

namespace retclip::train {

/// Where and on what this process trains: run directory (config.yaml, run.json, logs),
/// device, threads and the process group (a single-process Comm when not distributed).
struct Run {
  dist::Env env;
  std::filesystem::path dir;
  at::Device device = at::kCPU;
  std::shared_ptr<dist::Comm> comm;
  std::string config_yaml, config_hash;
  int64_t threads = 0;  ///< intra-op threads (train.threads resolved)
  bool primary() const { return env.rank == 0; }
};

/// The checkpoints directory of a run: checkpoint.dir, or log.dir/checkpoints.
std::filesystem::path checkpoint_dir(const config::Config& cfg);

/// Makes log.dir safe to start `command` ("train", "finetune") in, before anything is
/// written: a directory that already holds a run (step-N checkpoints or metrics.jsonl) is
/// refused with a UsageError naming it and its newest step, unless checkpoint.resume is
/// set (the run continues) or `overwrite` (rank 0 removes the old checkpoints,
/// metrics.jsonl and TensorBoard events, so nothing of the two runs mixes).
void claim_run_dir(const config::Config& cfg, const std::string& command, bool overwrite,
                   int rank);

/// A log.dir this command creates is removed again when the command fails before its
/// first step (a bad config, unreadable data, a model that does not build), so that
/// failed commands leave no run directory behind. One that existed before, or one whose
/// run reached keep(), stays as it is. Only rank 0 removes.
class NewRunDir {
 public:
  NewRunDir(const config::Config& cfg, int rank);
  ~NewRunDir();
  NewRunDir(const NewRunDir&) = delete;
  NewRunDir& operator=(const NewRunDir&) = delete;
  void keep() { keep_ = true; }

 private:
  std::filesystem::path dir_;
  bool keep_ = false;
};

/// Opens the run of log.dir: `<name>.log` (rank 0; `<name>.rank<r>.log` on the others),
/// threads, malloc tuning, train.device, the process group, config.yaml and run.json.
/// `precision` is the run's precision key value (`<name>.precision`): anything but fp32
/// and auto needs CUDA (UsageError).
Run open_run(const config::Config& cfg, const std::string& name, config::Precision precision);

/// Writes config.yaml and run.json of `run` from `cfg` (rank 0) and sets run.config_yaml
/// and run.config_hash: open_run does it, and a run whose config gains resolved values
/// (the tokenizer found through the shards) does it again.
void record_config(Run& run, const config::Config& cfg);

/// Seeds with train.seed, builds RetClip from model.*, loads model.init.* (full, then the
/// vision and text towers), freezes train.freeze.*, moves it to `device` in train mode.
/// Every rank builds the same initial weights; ranks above 0 then reseed (seed + rank)
/// so that each draws its own dropout masks.
model::RetClip build_model(const config::Config& cfg, int64_t vocab, const at::Device& device,
                           int rank);

/// Loads model.init.full (strict, RET-CLIP names), model.init.vision (OpenAI CLIP /
/// OpenCLIP ViT) and model.init.text (Hugging Face BERT), in that order.
/// model.init.vision `none` loads nothing (random towers on purpose). A whole CLIP
/// checkpoint's `logit_scale` becomes the patient level's scale, as in the reference.
/// Partial loads (missing tensors, shape mismatches) are logged as warnings.
void init_from_pretrained(model::RetClip& net, const config::InitConfig& init);

/// Freezes `visual.conv1`, `visual.class_embedding`, `visual.positional_embedding`,
/// `visual.ln_pre` and `visual.transformer.resblocks.{0..blocks-1}` of `module` (any module
/// with RET-CLIP's `visual.*` names); nothing when blocks <= 0.
void freeze_vision_blocks(torch::nn::Module& module, int64_t blocks);

/// UsageError naming the keys when model.init.required is set and no model.init.* file
/// is given; called by init_from_pretrained, and by the trainer before any data is read.
void check_init_given(const config::InitConfig& init);

/// Sets requires_grad false on the parts train.freeze names.
void apply_freeze(model::RetClip& net, const config::FreezeConfig& freeze);

}  // namespace retclip::train
