// Shared pieces of the model tests: the micro model's options, the micro classifier's,
// padded random token ids, and the largest elementwise difference of two tensors.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "retclip/model/classifier.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/model/retclip.hpp"

namespace retclip::test {

/// vit-micro + bert-micro with a 32-wide joint embedding.
inline model::RetClipOptions micro_options(int64_t vocab = 100) {
  return model::RetClipOptions()
      .vision(model::vision_preset("vit-micro"))
      .text(model::text_preset("bert-micro", vocab))
      .embed_dim(32);
}

/// A classifier head on vit-micro: `level` and `feature` as the finetune.* keys spell them.
inline model::ClassifierOptions micro_classifier(const std::string& level,
                                                 const std::string& feature, int64_t classes = 3,
                                                 bool multi = false) {
  return model::ClassifierOptions(model::vision_preset("vit-micro"), classes)
      .multi_label(multi)
      .level(config::parse<config::Level>(level, "level"))
      .feature(config::parse<config::Feature>(feature, "feature"));
}

/// Random ids in [1, vocab) with row i padded (id 0) from position 2 + i % (t - 2).
inline torch::Tensor tokens_for(int64_t b, int64_t t, int64_t vocab) {
  auto tok = torch::randint(1, vocab, {b, t}, torch::kLong);
  for (int64_t i = 0; i < b; ++i)
    tok.index_put_({i, torch::indexing::Slice(2 + (i % (t - 2)), torch::indexing::None)}, 0);
  return tok;
}

inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

}  // namespace retclip::test
