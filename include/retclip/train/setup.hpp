// Run set-up shared by `retclip train` and `retclip bench`, so that both time and train
// the same model: the seeded model with its pretrained towers and frozen parts.
//
//   model::RetClip net = train::build_model(cfg, data.vocab_size(), device, comm->rank());
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "retclip/config/config.hpp"
#include "retclip/model/retclip.hpp"

namespace retclip::train {

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

/// UsageError naming the keys when model.init.required is set and no model.init.* file
/// is given; called by init_from_pretrained, and by the trainer before any data is read.
void check_init_given(const config::InitConfig& init);

/// Sets requires_grad false on the parts train.freeze names.
void apply_freeze(model::RetClip& net, const config::FreezeConfig& freeze);

}  // namespace retclip::train
