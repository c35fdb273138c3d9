// Oracle tests of the timm ViT family in retclip's one image tower, against timm 1.0.31
// (tests/python/timm_vit_oracle.py): small random timm models of three kinds (CLIP-shaped;
// RETFound-shaped: patch bias, GELU, avg pool + fc_norm, saved as a .pth with a `model`
// key and MAE decoder keys; DINOv2-shaped: registers, layer scale, no_embed_class) are
// imported with model.vision.preset=checkpoint and give timm's features within 1e-5;
// the position-embedding resampling equals timm's resample_abs_pos_embed within 1e-5;
// import -> export --format timm -> timm.create_model("local-dir:...") round-trips.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../support/interop.hpp"
#include "../support/scratch.hpp"
#include "../support/timm_vit.hpp"
#include "retclip/config/config.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/model/vision.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace retclip;
using namespace retclip::io;
using namespace retclip::test;

namespace {

// The image tower under `visual.`, as RetClip and Classifier hold it.
struct TimmVitHolder : torch::nn::Module {
  explicit TimmVitHolder(const model::VisionTransformerOptions& o) {
    visual = register_module("visual", model::VisionTransformer(o));
  }
  model::VisionTransformer visual{nullptr};
};

// model.vision.preset=checkpoint on `file`, at `image_size` (0: the file's).
config::ModelConfig timm_vit_config(const fs::path& file, int64_t image_size = 0) {
  config::ModelConfig m;
  m.vision.preset = config::kVisionFromCheckpoint;
  m.vision.image_size = image_size;
  m.init.vision = file.string();
  m.text.preset = "bert-micro";
  resolve_pretrained_presets(m);
  return m;
}

std::shared_ptr<TimmVitHolder> timm_vit_import(const config::ModelConfig& m) {
  auto net = std::make_shared<TimmVitHolder>(model::vision_options(m));
  const auto& o = net->visual->options();
  load_pretrained(*net, m.init.vision, Pretrained::kVision, "model.init.vision", o.grid());
  net->eval();
  return net;
}

double timm_vit_max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

// A retclip export's inputs for the timm writer: the tower's weights and its sidecar
// record, as `retclip export` writes them.
ExportBundle timm_vit_bundle(const TimmVitHolder& net) {
  const auto& v = net.visual->options();
  json vision = vision_architecture_json(v);
  vision["preset"] = "checkpoint";
  ExportBundle b;
  b.weights = module_state_dict(net);
  b.sidecar = json{{"format", "retclip-export"},
                   {"step", 0},
                   {"embed_dim", v.embed_dim()},
                   {"vision", vision},
                   {"text", {{"preset", "none"}}},
                   {"tokenizer", {{"type", "wordpiece"}, {"file", ""}}},
                   {"preprocessing",
                    {{"image_size", v.image_size()},
                     {"mean", {0.485, 0.456, 0.406}},
                     {"std", {0.229, 0.224, 0.225}}}}};
  return b;
}

class TimmVitOracle : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(TimmVitOracle, ImportsWithTheArchitectureAndGivesTimmsFeatures) {
  REQUIRE_PYTHON("timm, safetensors");
  std::string err;
  const fs::path fx = timm_vit_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const std::string kind = GetParam();
  const json man = json::parse(util::read_file(fx / "manifest.json"));
  const fs::path file = fx / man[kind]["file"].get<std::string>();
  const config::ModelConfig m = timm_vit_config(file);
  const auto& v = m.vision;
  EXPECT_EQ(v.image_size, man[kind]["image_size"].get<int64_t>());
  EXPECT_EQ(v.width, 128);
  EXPECT_EQ(v.layers, 2);
  EXPECT_EQ(m.embed_dim, 128);  // no projection in the file: width
  auto net = timm_vit_import(m);
  const auto& o = net->visual->options();
  if (kind == "clip") {
    EXPECT_TRUE(o.norm_pre());
    EXPECT_FALSE(o.patch_bias());
    EXPECT_EQ(o.activation(), model::VisionActivation::kQuickGelu);
    EXPECT_EQ(o.norm_eps(), 1e-5);
    EXPECT_EQ(o.pool(), model::VisionPool::kToken);
  } else if (kind == "retfound") {
    EXPECT_FALSE(o.norm_pre());
    EXPECT_TRUE(o.patch_bias());
    EXPECT_EQ(o.activation(), model::VisionActivation::kGelu);
    EXPECT_EQ(o.norm_eps(), 1e-6);
    EXPECT_EQ(o.pool(), model::VisionPool::kAvg);
    EXPECT_TRUE(o.fc_norm());
  } else {
    EXPECT_EQ(o.register_tokens(), 4);
    EXPECT_FALSE(o.pos_embed_prefix());
    EXPECT_GT(o.layer_scale(), 0);
    EXPECT_EQ(o.pool(), model::VisionPool::kToken);
  }
  const StateDict io = load_weights(fx / (kind + "_io.safetensors"));
  at::Tensor got;
  {
    torch::NoGradGuard ng;
    got = net->visual->forward_pooled(*find_tensor(io, "images"));
  }
  const double d = timm_vit_max_diff(got, *find_tensor(io, "feature"));
  std::printf("%s: retclip vs timm pre-logits feature max |diff| %.3e\n", kind.c_str(), d);
  EXPECT_LE(d, kTol);
}

TEST_P(TimmVitOracle, RoundTripsThroughExportFormatTimm) {
  REQUIRE_PYTHON("timm, safetensors");
  std::string err;
  const fs::path fx = timm_vit_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const std::string kind = GetParam();
  const json man = json::parse(util::read_file(fx / "manifest.json"));
  auto net = timm_vit_import(timm_vit_config(fx / man[kind]["file"].get<std::string>()));
  const ExportBundle b = timm_vit_bundle(*net);
  const fs::path out = fs::path(::testing::TempDir()) / ("timm_vit_rt_" + kind);
  util::remove_tree(out);
  write_export_format(ExportFormat::kTimm, b, out);
  const json cfg = json::parse(util::read_file(out / "timm" / "config.json"));
  // The tiny models match no registered size: the family's base architecture, every
  // option in model_args.
  const std::string arch =
      kind == "clip" ? "vit_base_patch16_clip_quickgelu_224" : "vit_base_patch16_224";
  EXPECT_EQ(cfg["architecture"], arch);
  const fs::path log = out.string() + ".log";
  fs::remove(log);
  const int rc = run("python3 " + kTimmVitScript + " roundtrip " + (out / "timm").string() + " " +
                         kind + " " + fx.string() + " " + arch,
                     log);
  std::printf("%s", util::read_file(log).c_str());
  EXPECT_EQ(rc, 0) << util::read_file(log);
}

INSTANTIATE_TEST_SUITE_P(Kinds, TimmVitOracle, ::testing::Values("clip", "retfound", "dinov2"));

TEST(TimmVitResample, EqualsTimmsResampleAbsPosEmbed) {
  REQUIRE_PYTHON("timm, safetensors");
  std::string err;
  const fs::path fx = timm_vit_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const StateDict r = load_weights(fx / "resample.safetensors");
  const at::Tensor pe = find_tensor(r, "pe")->squeeze(0), pe1 = find_tensor(r, "pe1")->squeeze(0);
  const double d6 =
      timm_vit_max_diff(resample_positional_embedding(pe, 6, 5), find_tensor(r, "to6")->squeeze(0));
  const double d3 =
      timm_vit_max_diff(resample_positional_embedding(pe, 3, 5), find_tensor(r, "to3")->squeeze(0));
  const double d7 = timm_vit_max_diff(resample_positional_embedding(pe1, 7, 1),
                                      find_tensor(r, "to7")->squeeze(0));
  std::printf("resample vs timm: 4->6 %.3e, 4->3 %.3e (5 prefix rows), 4->7 %.3e (1)\n", d6, d3,
              d7);
  EXPECT_LE(d6, kTol);
  EXPECT_LE(d3, kTol);  // shrinking: antialias, as timm
  EXPECT_LE(d7, kTol);
}

TEST(TimmVitResample, A32PxCheckpointAt48PxEqualsTimmsCheckpointFilter) {
  REQUIRE_PYTHON("timm, safetensors");
  std::string err;
  const fs::path fx = timm_vit_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const config::ModelConfig m = timm_vit_config(fx / "retfound.pth", 48);
  EXPECT_EQ(m.vision.image_size, 48);
  auto net = timm_vit_import(m);
  const StateDict io = load_weights(fx / "retfound_48_io.safetensors");
  torch::NoGradGuard ng;
  const double d = timm_vit_max_diff(net->visual->forward_pooled(*find_tensor(io, "images")),
                                     *find_tensor(io, "feature"));
  std::printf("retfound 32 px -> 48 px: max |diff| %.3e vs timm's checkpoint_filter_fn\n", d);
  EXPECT_LE(d, kTol);
}

TEST(TimmVitImport, PthWithModelKeyListsMaeDecoderAndNamesAMissingKey) {
  REQUIRE_PYTHON("timm, safetensors");
  std::string err;
  const fs::path fx = timm_vit_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const StateDict raw = load_weights(fx / "retfound.pth");  // {"model": ..., "epoch": 3}
  const TimmVitImport imp = import_timm_vit(raw);
  std::vector<std::string> want{"head.weight", "head.bias", "mask_token"};
  for (const auto& k : want)
    EXPECT_NE(std::find(imp.ignored.begin(), imp.ignored.end(), k), imp.ignored.end()) << k;
  size_t decoder = 0;
  for (const auto& k : imp.ignored) decoder += k.rfind("decoder_", 0) == 0;
  EXPECT_EQ(decoder, 7u);
  EXPECT_EQ(find_tensor(imp.visual, "visual.proj"), nullptr);  // a 5-class head, not a projection
  EXPECT_NE(find_tensor(imp.visual, "visual.fc_norm.weight"), nullptr);
  EXPECT_NE(find_tensor(imp.visual, "visual.conv1.bias"), nullptr);

  // A tower tensor missing from the file is an error naming it.
  StateDict cut;
  for (const auto& [k, v] : raw)
    if (k != "blocks.1.norm2.weight") cut.emplace_back(k, v);
  const fs::path f = fs::path(::testing::TempDir()) / "timm_vit_cut.safetensors";
  save_weights(f, cut);
  config::ModelConfig m = timm_vit_config(fx / "retfound.pth");
  auto net = std::make_shared<TimmVitHolder>(model::vision_options(m));
  const std::string e = usage_error_of(
      [&] { load_pretrained(*net, f, Pretrained::kVision, "model.init.vision", 4); });
  EXPECT_NE(e.find("visual.transformer.resblocks.1.ln_2.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("model.init.vision"), std::string::npos) << e;
}
