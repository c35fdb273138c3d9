// Named model sizes (RET-CLIP's configs plus small CPU presets) and the bridge from
// the typed config (config::ModelConfig) to RetClipOptions. Model code sees no YAML.
//
//   auto opts = model::retclip_options(cfg.model, tokenizer.vocab_size());
//   model::RetClip net(opts);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/model/bert.hpp"
#include "retclip/model/retclip.hpp"
#include "retclip/model/vision.hpp"

namespace retclip::model {

/// The Options of a named size (config::vision_presets(), or kVisionFromCheckpoint with
/// every size 0). Throws UsageError listing the valid names when `name` is unknown.
VisionTransformerOptions vision_preset(const std::string& name);

/// `vocab_size` > 0 overrides the preset's vocabulary (it is the tokenizer's); presets
/// without a fixed vocabulary (bert-tiny, bert-micro) require it (UsageError otherwise).
BertOptions text_preset(const std::string& name, int64_t vocab_size = 0);

/// The image tower's Options from model.vision (+ model.embed_dim): the preset's sizes,
/// the overrides, the architecture options (docs/WEIGHTS.md) with their derived defaults.
/// Throws UsageError naming the key for a size left unset or inconsistent.
VisionTransformerOptions vision_options(const config::ModelConfig& cfg,
                                        bool grad_checkpointing = false);

/// RetClipOptions from the `model` config section (+ train.grad_checkpointing given
/// separately). Vocabulary: cfg.text.vocab_size if > 0, else `tokenizer_vocab` if > 0,
/// else the preset's. Overrides of 0 keep the preset's value. Checks consistency
/// (image_size % patch_size, width % heads, hidden % heads) with key paths in errors.
RetClipOptions retclip_options(const config::ModelConfig& cfg, int64_t tokenizer_vocab = 0,
                               bool grad_checkpointing = false);

}  // namespace retclip::model
