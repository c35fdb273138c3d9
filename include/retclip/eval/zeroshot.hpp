// Zero-shot classification: class prompts (several templates per class, any language the
// tokenizer covers) are embedded with the text tower, averaged per class, and scored
// against image embeddings: at eye level the eye's text head (left or right) against the
// eye's mapped image embedding, at patient level the patient heads. Same metrics as the
// probe.
//
//   auto prompts = eval::load_prompts("configs/prompts/synth-findings.yaml");
//   auto r = eval::run_zeroshot(encoder, set, prompts, options);
//   r.json, r.summary
//   auto e = eval::class_embeddings(encoder, prompts, device);   // e.text[model::Level::kLeft]
//
// Prompt file (YAML): `classes:` a list of {name: ..., prompts: [...]} in class order.
#pragma once

#include <string>
#include <vector>

#include "retclip/data/labels.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/eval/metrics.hpp"
#include "retclip/model/level.hpp"

namespace retclip::eval {

struct PromptSet {
  std::string source;
  std::vector<std::string> classes;
  std::vector<std::vector<std::string>> prompts;  ///< per class, at least one
};

PromptSet load_prompts(const std::string& path);

/// The class text embeddings of each text head and the heads' logit scales, what zero-shot
/// scores with and what a zero-shot-initialised fine-tuning head starts from.
struct ClassEmbeddings {
  /// [C, E] float32 on the CPU per level, unit rows: the L2-normalised mean of the class's
  /// L2-normalised prompt embeddings.
  model::PerLevel<at::Tensor> text;
  model::PerLevel<double> scale;  ///< exp(logit_scale) of the level's head
};

/// Embeds every prompt with `encoder`'s text tower on `device` (tokenised as the reports
/// were). Throws UsageError naming the encoder when it has no text tower or tokenizer.
ClassEmbeddings class_embeddings(Encoder& encoder, const PromptSet& prompts,
                                 const at::Device& device);

struct ZeroShotOptions {
  FeatureOptions features;     ///< level is taken from the set
  BootstrapOptions bootstrap;  ///< rounds 0 = no CIs
};

struct ZeroShotResult {
  /// [N_test, C]: single-label the softmax over classes of scale x cosine, multi-label the
  /// cosine per label.
  at::Tensor scores;
  SingleLabelMetrics single;
  MultiLabelMetrics multi;
  std::map<std::string, Interval> ci;
  std::string json, summary;
};

/// Scores the test split (multi-label F1 thresholds are tuned on the val split when it
/// has rows, else 0 cosine). The set's classes must be the prompt file's classes.
ZeroShotResult run_zeroshot(Encoder& encoder, const data::LabelledSet& set,
                            const PromptSet& prompts, const ZeroShotOptions& options);

}  // namespace retclip::eval
