// Fine-tuning: `retclip finetune`. Supervised training of the image tower with a linear
// head (model/classifier.hpp) on a labelled set (data::read_labelled), with RETFound's
// recipe as the defaults of the `finetune` config section: AdamW with layer-wise lr
// decay, lr = blr x batch / 256, warmup then cosine to a floor, drop-path, augmentation,
// label smoothing, optional mixup / cutmix, bf16 on CUDA, gradient accumulation.
//
//   config::Config cfg = config::load("configs/finetune-synth-dr.yaml");
//   train::FinetuneSummary s = train::run_finetune(cfg, {});
//   s.best_epoch, s.results  (also <log.dir>/results.json, <log.dir>/classifier/)
//
// It runs the one loop (train/loop.hpp) with a ClassifierTask (forward under autocast ▸
// CE / BCE on logits against smoothed, mixed targets) and the fine-tuning recipe: at the
// end of every epoch rank 0 scores the validation split (eval::classify_items, the
// inference loop `retclip predict` uses), keeps the best epoch's weights
// (finetune.select), and a checkpoint is written (the same format and exact resume as
// pretraining). After the last epoch the chosen weights score the test split once and
// are exported (eval::save_classifier). finetune.head_init=zeroshot starts the head from
// the prompts' class text embeddings, so step 0 predicts what `retclip zeroshot` scores.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "retclip/config/config.hpp"
#include "retclip/data/labels.hpp"
#include "retclip/model/classifier.hpp"
#include "retclip/train/loop.hpp"
#include "retclip/train/optimizer.hpp"

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
data::LabelledSet read_finetune_set(const config::Config& cfg);

/// The classifier run_finetune starts from (its step 0): the tower from finetune.init,
/// model.init.vision or random, the head as finetune.head_init says (zeroshot: the class
/// text embeddings of finetune.prompts x the logit scale, bias 0, on the normalised
/// post_proj feature, per eye at eye level), finetune.freeze applied. `init_kind`, when
/// given, receives results.json's init.kind. UsageError for a prompt file whose classes
/// are not the set's, an init without a text tower, or eyes of unknown laterality.
model::Classifier build_finetune_classifier(const config::Config& cfg, const data::LabelledSet& set,
                                            std::string* init_kind = nullptr);

/// finetune.freeze: none; head-only (everything but `head.*`); first-N-blocks
/// (patch/position embeddings, ln_pre and blocks 0..N-1). Throws UsageError naming
/// finetune.freeze when N is above the ViT's depth.
void apply_classifier_freeze(model::Classifier& net, const config::Freeze& freeze);

/// AdamW over the classifier with finetune.layer_decay, .weight_decay, .betas, .eps (no
/// decay on optim.no_decay names); its lr_scale goes into StepOptions.
LayerDecayOptimizer finetune_optimizer(const config::Config& cfg, model::Classifier& net);

/// The value finetune.select picks epochs by, from a split's metric scalars: "retfound" =
/// (f1_macro + auroc_macro + kappa) / 3, multi-label (f1_macro + auroc_macro) / 2; other
/// names are the scalar itself. NaN when a term is undefined.
double selection_score(const std::string& select, const std::map<std::string, double>& scalars,
                       bool multi_label);

}  // namespace retclip::train
