// The fine-tuning loop: `retclip finetune`. Supervised training of the image tower with
// a linear head (train/classifier.hpp) on a labelled set (eval::read_labelled), with
// RETFound's recipe as the defaults of the `finetune` config section: AdamW with
// layer-wise lr decay, lr = blr x batch / 256, warmup then cosine to a floor, drop-path,
// augmentation, label smoothing, optional mixup / cutmix, bf16 on CUDA.
//
//   config::Config cfg = config::load("configs/finetune-synth-dr.yaml");
//   train::FinetuneSummary s = train::run_finetune(cfg, {});
//   s.best_epoch, s.results  (also <log.dir>/results.json, <log.dir>/classifier/)
//
// Per step: loader batch ▸ targets (smoothed, mixed) ▸ forward under autocast ▸ CE / BCE
// on logits ▸ backward with the gradient all-reduce (dist::GradSync) ▸ loss averaged
// over ranks ▸ train::optimizer_update (the optimizer half pretraining uses too). At the
// end of every epoch rank 0 scores the validation split, keeps the best epoch's weights
// (finetune.select), and a checkpoint is written (TrainState + save_checkpoint: the same
// format and exact resume as pretraining). After the last epoch the chosen weights score
// the test split once and are exported. finetune.head_init=zeroshot starts the head from
// the prompts' class text embeddings, so step 0 predicts what `retclip zeroshot` scores.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "retclip/config/config.hpp"
#include "retclip/eval/labels.hpp"
#include "retclip/train/classifier.hpp"
#include "retclip/train/trainer.hpp"

namespace retclip::train {

struct FinetuneSummary {
  int64_t start_step = 0, end_step = 0, total_steps = 0;
  bool interrupted = false;  ///< stopped by a signal or the time budget (resume to finish)
  int64_t best_epoch = 0;    ///< chosen on validation (rank 0)
  double best_score = 0;
  nlohmann::json results;  ///< results.json (rank 0, finished runs)
  std::string checkpoint;  ///< last checkpoint written
  std::string export_dir;  ///< <log.dir>/classifier (finished runs)
  int rank = 0;
};

/// Runs (or, with checkpoint.resume, resumes) fine-tuning as configured. Throws
/// UsageError for bad inputs found before the first step.
FinetuneSummary run_finetune(const config::Config& cfg, const TrainOptions& options);

/// The labelled set of finetune.data with the finetune split keys; UsageError when it has
/// no training or validation rows, or finetune.select has no value for its task.
eval::LabelledSet read_finetune_set(const config::Config& cfg);

/// The classifier run_finetune starts from (its step 0): the tower from finetune.init,
/// model.init.vision or random, the head as finetune.head_init says (zeroshot: the class
/// text embeddings of finetune.prompts x the logit scale, bias 0, on the normalised
/// post_proj feature, per eye at eye level), finetune.freeze applied. `init_kind`, when
/// given, receives results.json's init.kind. UsageError for a prompt file whose classes
/// are not the set's, an init without a text tower, or eyes of unknown laterality.
Classifier build_finetune_classifier(const config::Config& cfg, const eval::LabelledSet& set,
                                     std::string* init_kind = nullptr);

/// The value finetune.select picks epochs by, from a split's metric scalars: "retfound" =
/// (f1_macro + auroc_macro + kappa) / 3, multi-label (f1_macro + auroc_macro) / 2; other
/// names are the scalar itself. NaN when a term is undefined.
double selection_score(const std::string& select, const std::map<std::string, double>& scalars,
                       bool multi_label);

}  // namespace retclip::train
