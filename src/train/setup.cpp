// The seeded, initialised and partly frozen model of a run (see setup.hpp).
#include "retclip/train/setup.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"

namespace retclip::train {

void apply_freeze(model::RetClip& net, const config::FreezeConfig& f) {
  auto freeze_prefix = [&](const std::string& prefix) {
    for (auto& p : net->named_parameters())
      if (p.key().rfind(prefix, 0) == 0) p.value().set_requires_grad(false);
  };
  if (f.vision) freeze_prefix("visual.");
  if (f.text) freeze_prefix("bert.");
  if (f.vision_blocks > 0) {
    for (const char* k :
         {"visual.conv1", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre"})
      freeze_prefix(k);
    for (int64_t i = 0; i < f.vision_blocks; ++i)
      freeze_prefix(fmt::format("visual.transformer.resblocks.{}.", i));
  }
  if (f.text_blocks > 0) {
    freeze_prefix("bert.embeddings.");
    for (int64_t i = 0; i < f.text_blocks; ++i)
      freeze_prefix(fmt::format("bert.encoder.layer.{}.", i));
  }
}

namespace {

// A partial load is worth the user's attention: missing or mis-shaped tensors stay at
// their random initialisation.
void report_load(const char* key, const io::LoadReport& rep) {
  if (rep.ok())
    log::info("{}: {}", key, rep.to_string());
  else
    log::warn("{}: {}", key, rep.to_string());
}

}  // namespace

void check_init_given(const config::InitConfig& init) {
  RETCLIP_CHECK_USAGE(
      !init.required || !init.vision.empty() || !init.text.empty() || !init.full.empty(),
      "model.init.required is true but model.init.vision, model.init.text and "
      "model.init.full are all empty: the towers would train from random "
      "weights. HINT: set model.init.vision (CLIP ViT weights) and "
      "model.init.text (BERT / RoBERTa weights), or model.init.full; or "
      "model.init.vision=none to train from random weights on purpose");
}

void init_from_pretrained(model::RetClip& net, const config::InitConfig& init) {
  check_init_given(init);
  const auto& vo = net->options().vision();
  // load_pretrained names the config key and the file in every error it raises.
  if (!init.full.empty()) {
    auto rep = io::load_pretrained(*net, init.full, io::Pretrained::kFull, "model.init.full");
    log::info("model.init.full: {} tensors from {}", rep.loaded.size(), init.full);
  }
  if (!init.vision.empty() && init.vision != "none") {
    auto rep = io::load_pretrained(*net, init.vision, io::Pretrained::kVision, "model.init.vision",
                                   vo.image_size() / vo.patch_size());
    report_load("model.init.vision", rep);
    // A whole CLIP checkpoint carries its learned temperature; the reference starts the
    // patient level's scale from it (the eye levels keep model.logit_scale_init).
    if (rep.logit_scale) {
      torch::NoGradGuard no_grad;
      net->logit_scale.fill_(*rep.logit_scale);
      log::info("model.init.vision: patient logit scale {:.4f} (x{:.2f}) from the checkpoint",
                net->logit_scale.item<double>(), std::exp(net->logit_scale.item<double>()));
    }
  }
  if (!init.text.empty())
    report_load("model.init.text",
                io::load_pretrained(*net, init.text, io::Pretrained::kText, "model.init.text"));
}

model::RetClip build_model(const config::Config& cfg, int64_t vocab, const at::Device& device,
                           int rank) {
  torch::manual_seed(cfg.train.seed);
  model::RetClip net(model::retclip_options(cfg.model, vocab, cfg.train.grad_checkpointing));
  init_from_pretrained(net, cfg.model.init);
  apply_freeze(net, cfg.train.freeze);
  net->to(device);
  net->train();
  if (rank > 0) torch::manual_seed(cfg.train.seed + static_cast<uint64_t>(rank));
  return net;
}

}  // namespace retclip::train
