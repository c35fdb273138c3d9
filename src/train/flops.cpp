// count_flops and the peak-rate table (see flops.hpp and docs/PERFORMANCE.md).
#include "retclip/train/flops.hpp"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

namespace retclip::train {

FlopCount count_flops(const model::RetClipOptions& o, int64_t tokens, int64_t batch) {
  FlopCount f;
  f.batch = batch;
  // Vision: N = grid² + 1 tokens of width D; per block 24·N·D² (qkv 6, out 2, MLP 16 at
  // ratio 4; 4·r·N·D² in general) + 4·N²·D (scores and weighted values).
  const auto& v = o.vision();
  const double g = static_cast<double>(v.grid()), p = static_cast<double>(v.patch_size());
  const double n = g * g + 1, d = static_cast<double>(v.width());
  const double mlp = v.mlp_ratio() * d;
  const double block = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * mlp + 4 * n * n * d;
  f.vision_per_image = 2 * g * g * (3 * p * p) * d  // conv1 (patch embedding)
                       + static_cast<double>(v.layers()) * block +
                       2 * d * static_cast<double>(v.embed_dim());  // CLS @ proj
  // Text: T tokens of width H, FFN I; per layer 8·T·H² + 4·T·H·I + 4·T²·H.
  const auto& t = o.text();
  const double tt = static_cast<double>(tokens), h = static_cast<double>(t.hidden()),
               ff = static_cast<double>(t.intermediate());
  const double layer = 2 * tt * h * 3 * h + 2 * tt * h * h + 2 * 2 * tt * h * ff + 4 * tt * tt * h;
  f.text_per_report = static_cast<double>(t.layers()) * layer;
  // Heads: three Linear(H,H)-ReLU-Linear(H,E) text projections; image mappings 2E->E, E->E x2.
  const double e = static_cast<double>(o.embed_dim());
  f.heads_per_patient = 3 * (2 * h * h + 2 * h * e) + 2 * (2 * e) * e + 2 * (2 * e * e);
  // Logits: per level B x B dot products of length E (the transposed direction reuses them).
  const double b = static_cast<double>(batch);
  f.logits_per_step = 3 * 2 * b * b * e;
  return f;
}

double peak_bf16_tflops(const std::string& device_name) {
  std::string s = device_name;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  auto has = [&](const char* k) { return s.find(k) != std::string::npos; };
  // Dense bf16 tensor-core peaks from NVIDIA's data sheets (sparsity figures halved).
  // Order matters: the first match wins (variants before the family).
  static const std::vector<std::pair<std::vector<const char*>, double>> table{
      {{"gh200"}, 989},        {{"h200"}, 989},     {{"h100", "pcie"}, 756},
      {{"h100", "nvl"}, 835},  {{"h100"}, 989},  // SXM (HBM3)
      {{"h800", "pcie"}, 756}, {{"h800"}, 989},     {{"h20"}, 148},
      {{"b200"}, 2250},        {{"b100"}, 1750},    {{"a100"}, 312},
      {{"a800"}, 312},         {{"a40"}, 150},  // before "a4"
      {{"a30"}, 165},          {{"a10g"}, 70},      {{"a10"}, 125},
      {{"l40s"}, 362},         {{"l40"}, 181},      {{"l4"}, 121},
      {{"rtx 6000 ada"}, 364}, {{"rtx 4090"}, 165}, {{"rtx 3090"}, 71},
      {{"v100"}, 125},  // fp16 tensor cores: V100 has no bf16
  };
  for (const auto& [keys, tflops] : table) {
    bool all = true;
    for (const char* k : keys) all = all && has(k);
    if (all) return tflops;
  }
  return 0;
}

}  // namespace retclip::train
