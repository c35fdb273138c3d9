// retclip embed: decode, fundus-crop and tokenise each patient of a manifest, run the
// exported model, and save the six embeddings with the patient ids.
#include "retclip/eval/embed.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "retclip/config/config.hpp"
#include "retclip/data/image.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/data/tokenizer.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/progress.hpp"

namespace retclip::eval {

namespace fs = std::filesystem;
using json = nlohmann::json;

int64_t embed_manifest(const EmbedOptions& o) {
  const fs::path dir(o.weights);
  const fs::path side_path = dir / "retclip.json";
  json side = json::parse(util::read_file(side_path));
  RETCLIP_CHECK_USAGE(side.value("format", "") == "retclip-export", side_path.string(),
                      " is not a retclip export sidecar");
  config::Config cfg = config::load_string(side.at("config").get<std::string>(), side_path.string());
  RETCLIP_CHECK_USAGE(side.at("files").contains("full"), "embed needs full.safetensors in ",
                      dir.string(), ". HINT: export with --parts full");
  const std::string tok_name = side.at("tokenizer").at("file").get<std::string>();
  RETCLIP_CHECK_USAGE(!tok_name.empty(), side_path.string(), " names no tokenizer file");
  auto tok = data::load_tokenizer(cfg.data.tokenizer.type, (dir / tok_name).string(),
                                  cfg.data.tokenizer.lowercase, cfg.data.tokenizer.map_quotes);
  model::RetClip net(model::retclip_options(cfg.model, tok->vocab_size()));
  io::load_pretrained(*net, dir / side.at("files").at("full").get<std::string>(),
                      io::Pretrained::kFull, "--weights");
  at::Device device = (o.device != "cpu" && torch::cuda::is_available()) ? at::Device(at::kCUDA, 0)
                                                                         : at::Device(at::kCPU);
  net->to(device);
  net->eval();

  data::ReadReport rep;
  auto samples = data::read_samples(o.manifest, "auto", o.split, data::BadSamplePolicy::kFail, &rep);
  RETCLIP_CHECK_USAGE(!samples.empty(), "no patients in ", o.manifest);
  const int64_t S = cfg.data.image_size, T = cfg.data.context_length;
  data::AugmentParams no_aug;
  std::map<std::string, std::vector<at::Tensor>> out;
  std::vector<std::string> ids;
  util::Progress bar("embed", static_cast<int64_t>(samples.size()), "patients");
  torch::NoGradGuard ng;
  for (size_t s = 0; s < samples.size(); s += static_cast<size_t>(o.batch_size)) {
    size_t e = std::min(samples.size(), s + static_cast<size_t>(o.batch_size));
    const int64_t B = static_cast<int64_t>(e - s);
    at::Tensor left = at::zeros({B, 3, S, S}), right = at::zeros({B, 3, S, S});
    at::Tensor tokens = at::zeros({B, T}, at::kLong);
    at::Tensor hl = at::zeros({B}, at::kBool), hr = at::zeros({B}, at::kBool);
    for (int64_t i = 0; i < B; ++i) {
      const auto& smp = samples[s + static_cast<size_t>(i)];
      ids.push_back(smp.patient_id);
      auto eye = [&](const data::ImageRef& ref, at::Tensor& dst, at::Tensor& has) {
        if (!ref.present()) return;
        cv::Mat img = data::fundus_preprocess(data::decode_image(ref), S, ref.describe());
        dst[i] = data::to_tensor(img, no_aug, 0, cfg.data.mean, cfg.data.std);
        has[i] = true;
      };
      eye(smp.left, left, hl);
      eye(smp.right, right, hr);
      auto t = tok->encode(smp.report, T);
      tokens[i] = at::tensor(t, at::kLong);
    }
    model::Embeddings emb = net->forward(left.to(device), right.to(device), tokens.to(device),
                                         hl.to(device), hr.to(device));
    for (model::Level l : model::kLevels) {
      const std::string level = model::level_name(l);
      out[level + "_img"].push_back(emb.img[l].to(at::kCPU, at::kFloat));
      out[level + "_txt"].push_back(emb.txt[l].to(at::kCPU, at::kFloat));
    }
    if (o.save_inputs) {
      out["input_left"].push_back(left);
      out["input_right"].push_back(right);
      out["input_tokens"].push_back(tokens);
    }
    out["has_left"].push_back(hl.to(at::kByte));
    out["has_right"].push_back(hr.to(at::kByte));
    bar.advance(B);
  }
  bar.finish();
  io::StateDict result;
  for (auto& [name, parts] : out) result.emplace_back(name, at::cat(parts));
  io::save_weights(o.out, result,
                   {{"patient_ids", json(ids).dump()}, {"weights", o.weights}, {"manifest", o.manifest}});
  return static_cast<int64_t>(ids.size());
}

}  // namespace retclip::eval
