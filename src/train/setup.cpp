// The seeded, initialised and partly frozen model of a run (see setup.hpp).
#include "retclip/train/setup.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
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

void init_from_pretrained(model::RetClip& net, const config::InitConfig& init) {
  const auto& vo = net->options().vision();
  // load_pretrained names the config key and the file in every error it raises.
  if (!init.full.empty()) {
    auto rep = io::load_pretrained(*net, init.full, io::Pretrained::kFull, "model.init.full");
    log::info("model.init.full: {} tensors from {}", rep.loaded.size(), init.full);
  }
  if (!init.vision.empty()) {
    auto rep = io::load_pretrained(*net, init.vision, io::Pretrained::kVision, "model.init.vision",
                                   vo.image_size() / vo.patch_size());
    log::info("model.init.vision: {}", rep.to_string());
  }
  if (!init.text.empty()) {
    auto rep = io::load_pretrained(*net, init.text, io::Pretrained::kText, "model.init.text");
    log::info("model.init.text: {}", rep.to_string());
  }
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
