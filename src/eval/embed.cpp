// retclip embed: each patient of a manifest decoded, fundus-cropped and tokenised by the
// loader's workers (the path features take), the exported model run on each batch, and
// the six embeddings saved with the patient ids.
#include "retclip/eval/embed.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "retclip/config/config.hpp"
#include "retclip/data/loader.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/data/tokenizer.hpp"
#include "retclip/eval/features.hpp"
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
  config::Config cfg =
      config::load_string(side.at("config").get<std::string>(), side_path.string());
  RETCLIP_CHECK_USAGE(side.at("files").contains("full"), "embed needs full.safetensors in ",
                      dir.string(), ". HINT: export with --parts full");
  const std::string tok_name = side.at("tokenizer").at("file").get<std::string>();
  RETCLIP_CHECK_USAGE(!tok_name.empty(), side_path.string(),
                      " names no tokenizer file (tokenizer.file is empty), so reports cannot be "
                      "encoded. HINT: export again with `retclip export --checkpoint RUN --out ",
                      dir.string(), " --tokenizer PATH` (the vocab.txt or .model of the run)");
  auto tok = data::load_tokenizer(cfg.data.tokenizer.type, (dir / tok_name).string(),
                                  cfg.data.tokenizer.lowercase, cfg.data.tokenizer.map_quotes);
  model::RetClip net(model::retclip_options(cfg.model, tok->vocab_size()));
  io::load_pretrained(*net, dir / side.at("files").at("full").get<std::string>(),
                      io::Pretrained::kFull, "--weights");
  const at::Device device = pick_device(o.device);
  net->to(device);
  net->eval();

  data::ReadReport rep;
  auto samples =
      data::read_samples(o.manifest, "auto", o.split, data::BadSamplePolicy::kFail, &rep);
  RETCLIP_CHECK_USAGE(!samples.empty(), "no patients in ", o.manifest);
  const size_t n = samples.size();
  std::vector<std::string> ids;
  for (const auto& smp : samples) ids.push_back(smp.patient_id);
  // The loader's workers decode, crop and tokenise while this thread runs the model.
  data::Loader loader(data::make_manifest_source(std::move(samples), cfg.data.image_size,
                                                 cfg.data.max_image_pixels,
                                                 cfg.data.preprocess),
                      std::shared_ptr<const data::Tokenizer>(std::move(tok)),
                      inference_loader_options(cfg.data, o.batch_size, o.workers, device,
                                               data::BadSamplePolicy::kFail));
  std::map<std::string, std::vector<at::Tensor>> rows;  // output name -> one row per patient
  auto put = [&](const std::string& name, const at::Tensor& batch, size_t j, int64_t index) {
    auto& r = rows[name];
    r.resize(n);
    r[static_cast<size_t>(index)] = batch[static_cast<int64_t>(j)];
  };
  util::Progress bar("embed", static_cast<int64_t>(n), "patients");
  torch::NoGradGuard ng;
  size_t done = 0;
  std::vector<bool> seen(n, false);
  while (auto b = loader.next()) {
    model::Embeddings emb =
        net->forward(b->left.to(device, at::kFloat, /*non_blocking=*/true),
                     b->right.to(device, at::kFloat, /*non_blocking=*/true), b->tokens.to(device),
                     b->has_left.to(device), b->has_right.to(device));
    std::map<std::string, at::Tensor> out;
    for (model::Level l : model::kLevels) {
      const std::string level = model::level_name(l);
      out[level + "_img"] = emb.img[l].to(at::kCPU, at::kFloat);
      out[level + "_txt"] = emb.txt[l].to(at::kCPU, at::kFloat);
    }
    if (o.save_inputs) {
      out["input_left"] = b->left;
      out["input_right"] = b->right;
      out["input_tokens"] = b->tokens;
    }
    out["has_left"] = b->has_left.to(at::kByte);
    out["has_right"] = b->has_right.to(at::kByte);
    // The last batch is padded with repeats of earlier patients: they are neither stored
    // nor counted, so the progress line ends at n of n.
    int64_t fresh = 0;
    for (size_t j = 0; j < b->indices.size(); ++j) {
      const int64_t index = b->indices[j];
      if (seen[static_cast<size_t>(index)]) continue;  // a padded repeat
      seen[static_cast<size_t>(index)] = true;
      for (const auto& [name, t] : out) put(name, t, j, index);
      ++fresh;
    }
    done += static_cast<size_t>(fresh);
    bar.advance(fresh);
  }
  bar.finish();
  RETCLIP_CHECK(done == n, "embed: ", done, " of ", n, " patients came out of the loader");
  io::StateDict result;
  for (auto& [name, r] : rows) result.emplace_back(name, at::stack(r));
  io::save_weights(
      o.out, result,
      {{"patient_ids", json(ids).dump()}, {"weights", o.weights}, {"manifest", o.manifest}});
  return static_cast<int64_t>(ids.size());
}

}  // namespace retclip::eval
