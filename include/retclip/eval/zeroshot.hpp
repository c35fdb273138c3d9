// Zero-shot classification: class prompts (several templates per class, any language the
// tokenizer covers) are embedded with the text tower, averaged per class, and scored
// against image embeddings: at eye level the eye's text head (left or right) against the
// eye's mapped image embedding, at patient level the patient heads. Same metrics as the
// probe.
//
//   auto prompts = eval::load_prompts("configs/prompts/synth-findings.yaml");
//   auto r = eval::run_zeroshot(encoder, set, prompts, options);
//   r.json, r.summary
//
// Prompt file (YAML): `classes:` a list of {name: ..., prompts: [...]} in class order.
#pragma once

#include <string>
#include <vector>

#include "retclip/eval/features.hpp"
#include "retclip/eval/labels.hpp"
#include "retclip/eval/metrics.hpp"

namespace retclip::eval {

struct PromptSet {
  std::string source;
  std::vector<std::string> classes;
  std::vector<std::vector<std::string>> prompts;  ///< per class, at least one
};

PromptSet load_prompts(const std::string& path);

struct ZeroShotOptions {
  FeatureOptions features;     ///< level is taken from the set
  BootstrapOptions bootstrap;  ///< rounds 0 = no CIs
};

struct ZeroShotResult {
  at::Tensor scores;  ///< [N_test, C]: softmax over classes (single-label) or cosines (multi-label)
  SingleLabelMetrics single;
  MultiLabelMetrics multi;
  std::map<std::string, Interval> ci;
  std::string json, summary;
};

/// Scores the test split (multi-label F1 thresholds are tuned on the val split when it
/// has rows, else 0 cosine). The set's classes must be the prompt file's classes.
ZeroShotResult run_zeroshot(Encoder& encoder, const LabelledSet& set, const PromptSet& prompts,
                            const ZeroShotOptions& options);

}  // namespace retclip::eval
