// Unit tests of the export formats (io/interop.hpp): key maps retclip <-> timm / open_clip /
// Hugging Face round-trip bitwise, the writers lay out the folders and model cards, their
// weights re-import into retclip unchanged, and presets "hf" / "checkpoint" read their
// sizes from the pretrained files. The libraries themselves load the folders in
// interop_oracle_test.cpp.
#include "../support/scratch.hpp"
#include "retclip/io/interop.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <set>

#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace retclip;
using namespace retclip::io;

namespace {

config::ModelConfig micro_config() {
  config::ModelConfig m;
  m.vision.preset = "vit-micro";
  m.text.preset = "bert-micro";
  m.text.vocab_size = 40;
  return m;
}

// A retclip state dict with random values (every tensor distinct).
StateDict micro_weights() {
  torch::manual_seed(7);
  model::RetClip net(model::retclip_options(micro_config()));
  StateDict sd;
  for (auto& [k, v] : module_state_dict(*net)) sd.emplace_back(k, at::randn_like(v));
  return sd;
}

void expect_same(const StateDict& got, const StateDict& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [k, v] : want) {
    const at::Tensor* g = find_tensor(got, k);
    ASSERT_NE(g, nullptr) << k;
    EXPECT_EQ(g->sizes(), v.sizes()) << k;
    EXPECT_TRUE(at::equal(*g, v)) << k;
  }
}

fs::path temp_dir(const std::string& name) { return test::scratch_dir("interop", name); }


json micro_sidecar(const std::string& tok_type) {
  return json{
      {"format", "retclip-export"},
      {"step", 12},
      {"embed_dim", 32},
      {"vision",
       {{"preset", "vit-micro"},
        {"image_size", 32},
        {"patch_size", 8},
        {"width", 64},
        {"layers", 2},
        {"heads", 1},
        {"mlp_ratio", 4.0}}},
      {"text",
       {{"preset", "bert-micro"},
        {"vocab_size", 40},
        {"hidden", 64},
        {"layers", 2},
        {"heads", 2},
        {"intermediate", 128},
        {"max_position", 64},
        {"layer_norm_eps", 1e-12},
        {"pad_id", 0},
        {"context_length", 16},
        {"dropout", 0.0}}},
      {"tokenizer",
       {{"type", tok_type}, {"file", "vocab.txt"}, {"lowercase", true}, {"layout", "[CLS] .."}}},
      {"preprocessing",
       {{"fundus_crop", "crop"},
        {"resize", "area"},
        {"image_size", 32},
        {"mean", {0.48145466, 0.4578275, 0.40821073}},
        {"std", {0.26862954, 0.26130258, 0.27577711}}}},
      {"training",
       {{"data", "synth/train.csv"},
        {"val", "synth/val.csv"},
        {"batch_size", 8},
        {"lr", 5e-4},
        {"held_out", {{"val/loss", 2.25}, {"val/acc_patient_i2t", 0.5}}},
        {"held_out_step", 12},
        {"probe", json::object()}}}};
}

}  // namespace

TEST(InteropKeys, TimmNamesAreTimmsAndMapBackBitwise) {
  const StateDict sd = micro_weights();
  const StateDict visual = filter_prefix(sd, "visual.");
  const StateDict timm = to_timm_vit(sd);
  EXPECT_EQ(timm.size(), visual.size() + 1);  // + head.bias
  EXPECT_TRUE(is_timm_vit(timm));
  for (const char* k :
       {"patch_embed.proj.weight", "norm_pre.weight", "blocks.1.norm1.bias",
        "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight",
        "blocks.1.norm2.weight", "blocks.0.mlp.fc1.bias", "blocks.1.mlp.fc2.weight", "norm.weight",
        "norm.bias", "head.weight", "head.bias"})
    EXPECT_NE(find_tensor(timm, k), nullptr) << k;
  EXPECT_EQ(find_tensor(timm, "cls_token")->sizes(), (std::vector<int64_t>{1, 1, 64}));
  EXPECT_EQ(find_tensor(timm, "pos_embed")->sizes(), (std::vector<int64_t>{1, 17, 64}));
  EXPECT_EQ(find_tensor(timm, "head.weight")->sizes(), (std::vector<int64_t>{32, 64}));
  EXPECT_TRUE(find_tensor(timm, "head.bias")->eq(0).all().item<bool>());
  expect_same(map_openai_clip_visual(timm), visual);
  expect_same(map_timm_vit(timm), visual);
}

TEST(InteropKeys, OpenClipAndHfMapBackBitwise) {
  const StateDict sd = micro_weights();
  const StateDict oc = to_open_clip_visual(sd);
  EXPECT_NE(find_tensor(oc, "transformer.resblocks.0.attn.in_proj_weight"), nullptr);
  EXPECT_NE(find_tensor(oc, "proj"), nullptr);
  expect_same(map_openai_clip_visual(oc), filter_prefix(sd, "visual."));
  const StateDict hf = to_hf_bert(sd);
  EXPECT_NE(find_tensor(hf, "encoder.layer.1.attention.self.query.weight"), nullptr);
  expect_same(map_hf_bert(hf), filter_prefix(sd, "bert."));
  const StateDict heads = retclip_heads(sd);
  EXPECT_EQ(heads.size(),
            3u * 4 + 3 + 3);  // 3 projections x (2 weights + 2 biases), 3 mappings, 3 scales
  EXPECT_EQ(filter_prefix(sd, "visual.").size() + filter_prefix(sd, "bert.").size() + heads.size(),
            sd.size());
}

TEST(InteropKeys, TimmPlainViTsMapAndWhatRetclipCannotHoldIsRejected) {
  StateDict timm = to_timm_vit(micro_weights());
  // A plain ViT (patch bias, no norm_pre, fc_norm) maps to the tower's optional tensors.
  StateDict plain;
  for (const auto& [k, v] : timm)
    if (k.rfind("norm_pre.", 0) != 0 && k.rfind("norm.", 0) != 0) plain.emplace_back(k, v);
  plain.emplace_back("patch_embed.proj.bias", at::zeros({64}));
  plain.emplace_back("fc_norm.weight", at::ones({64}));
  plain.emplace_back("fc_norm.bias", at::zeros({64}));
  plain.emplace_back("decoder_embed.weight", at::zeros({8, 64}));
  plain.emplace_back("mask_token", at::zeros({1, 1, 8}));
  const TimmVitImport imp = import_timm_vit(plain);
  EXPECT_NE(find_tensor(imp.visual, "visual.conv1.bias"), nullptr);
  EXPECT_NE(find_tensor(imp.visual, "visual.fc_norm.weight"), nullptr);
  EXPECT_EQ(find_tensor(imp.visual, "visual.ln_pre.weight"), nullptr);
  EXPECT_NE(find_tensor(imp.visual, "visual.proj"), nullptr);  // zero head bias: the projection
  EXPECT_EQ(imp.ignored, (std::vector<std::string>{"decoder_embed.weight", "mask_token"}));
  const VisionSizes v = vision_sizes_from_weights(imp.visual, "plain");
  EXPECT_TRUE(v.patch_bias);
  EXPECT_FALSE(v.norm_pre);
  EXPECT_EQ(v.pool, config::Pool::kAvgFcNorm);
  EXPECT_EQ(v.image_size / v.patch_size, 4);  // 16 patch rows after the class row
  // Registers and layer scale: timm's reg_token / ls1, ls2 and back.
  StateDict dino = timm;
  dino.emplace_back("reg_token", at::randn({1, 4, 64}));
  dino.emplace_back("blocks.0.ls1.gamma", at::randn({64}));
  const StateDict dv = map_timm_vit(dino);
  EXPECT_EQ(find_tensor(dv, "visual.register_embedding")->sizes(), (std::vector<int64_t>{4, 64}));
  EXPECT_NE(find_tensor(dv, "visual.transformer.resblocks.0.ls_1.gamma"), nullptr);
  const StateDict back = to_timm_vit(dv);
  EXPECT_NE(find_tensor(back, "reg_token"), nullptr);
  EXPECT_NE(find_tensor(back, "blocks.0.ls1.gamma"), nullptr);
  // A classifier head of another task is not the projection: listed, not loaded.
  StateDict biased = timm;
  for (auto& [k, v] : biased)
    if (k == "head.bias") v = at::ones_like(v);
  const TimmVitImport cls = import_timm_vit(biased);
  EXPECT_EQ(find_tensor(cls.visual, "visual.proj"), nullptr);
  EXPECT_EQ(cls.ignored, (std::vector<std::string>{"head.weight", "head.bias"}));
  // What the tower does not compute is refused, naming the key.
  for (const char* bad : {"attn_pool.latent", "dist_token", "blocks.0.attn.q_norm.weight"}) {
    StateDict with = timm;
    with.emplace_back(bad, at::zeros({1, 1, 64}));
    EXPECT_NE(test::usage_error_of([&] { map_timm_vit(with); }).find(bad), std::string::npos)
        << bad;
  }
}

TEST(InteropKeys, Dinov2TrainingLayoutConvertsAsTimmDoes) {
  // DINOv2's own checkpoints: the tower under backbone. (in a `teacher` dict), registers as
  // register_tokens, the class token with a position row and the registers without one.
  StateDict meta;
  const at::Tensor cls = at::randn({1, 1, 64}), pe = at::randn({1, 17, 64}),
                   reg = at::randn({1, 4, 64});
  for (const auto& [k, v] : to_timm_vit(micro_weights())) {
    if (k == "cls_token" || k == "pos_embed" || k.rfind("head.", 0) == 0) continue;
    meta.emplace_back("backbone." + k, v);
  }
  meta.emplace_back("backbone.cls_token", cls);
  meta.emplace_back("backbone.pos_embed", pe);
  meta.emplace_back("backbone.register_tokens", reg);
  meta.emplace_back("backbone.mask_token", at::zeros({1, 64}));
  EXPECT_TRUE(is_timm_vit(meta));
  const TimmVitImport imp = import_timm_vit(meta);
  EXPECT_EQ(imp.ignored, (std::vector<std::string>{"mask_token"}));
  const at::Tensor* c = find_tensor(imp.visual, "visual.class_embedding");
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(c->equal((cls + pe.slice(1, 0, 1)).reshape({-1})));  // timm's _convert_dinov2
  EXPECT_TRUE(find_tensor(imp.visual, "visual.positional_embedding")->equal(pe[0].slice(0, 1)));
  EXPECT_TRUE(find_tensor(imp.visual, "visual.register_embedding")->equal(reg[0]));
  const VisionSizes v = vision_sizes_from_weights(imp.visual, "dinov2");
  EXPECT_EQ(v.register_tokens, 4);
  EXPECT_FALSE(v.pos_embed_prefix);  // timm's no_embed_class
  EXPECT_EQ(v.image_size / v.patch_size, 4);
}

TEST(InteropFormats, ParsesListsAndRejectsUnknownNames) {
  auto f = parse_export_formats("retclip, timm,timm,hf");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0], ExportFormat::kRetclip);
  EXPECT_EQ(f[1], ExportFormat::kTimm);
  EXPECT_EQ(f[2], ExportFormat::kHf);
  EXPECT_EQ(parse_export_format("open_clip"), ExportFormat::kOpenClip);
  const std::string e = test::usage_error_of([] { parse_export_formats("retclip,onnx"); });
  EXPECT_NE(e.find("'onnx'"), std::string::npos) << e;
  EXPECT_NE(e.find("HINT: --format"), std::string::npos) << e;
  EXPECT_NE(test::usage_error_of([] { parse_export_formats(","); }).find("empty"), std::string::npos);
  EXPECT_EQ(export_format_dir(ExportFormat::kRetclip, "out"), fs::path("out"));
  EXPECT_EQ(export_format_dir(ExportFormat::kHf, "out"), fs::path("out") / "hf");
}

TEST(InteropFormats, WritersLayOutFoldersThatReimportUnchanged) {
  const fs::path dir = temp_dir("write");
  util::write_file_atomic(dir / "src-vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\n");
  ExportBundle b;
  b.weights = micro_weights();
  b.sidecar = micro_sidecar("wordpiece");
  b.tokenizer = dir / "src-vocab.txt";
  const fs::path out = dir / "export";
  for (auto f :
       {ExportFormat::kRetclip, ExportFormat::kOpenClip, ExportFormat::kTimm, ExportFormat::kHf})
    EXPECT_FALSE(write_export_format(f, b, out).empty());
  for (const char* f : {"full.safetensors",
                        "vision.safetensors",
                        "text.safetensors",
                        "retclip.json",
                        "src-vocab.txt",
                        "README.md",
                        "open_clip/open_clip_model.safetensors",
                        "open_clip/open_clip_config.json",
                        "open_clip/retclip/retclip_heads.safetensors",
                        "open_clip/text/config.json",
                        "open_clip/vocab.txt",
                        "open_clip/tokenizer_config.json",
                        "open_clip/README.md",
                        "timm/model.safetensors",
                        "timm/config.json",
                        "timm/README.md",
                        "hf/model.safetensors",
                        "hf/config.json",
                        "hf/vocab.txt",
                        "hf/tokenizer_config.json",
                        "hf/special_tokens_map.json",
                        "hf/retclip_heads.safetensors",
                        "hf/README.md"})
    EXPECT_TRUE(fs::exists(out / f)) << f;

  // Re-import: every tower comes back bitwise.
  expect_same(load_weights(out / "full.safetensors"), b.weights);
  // open_clip: one weights file at the top level (the one open_clip loads), holding the
  // towers bitwise; visual.proj carries the folded patient mapping, zero-padded to
  // max(E, H + 2) = 66; the heads and the unfolded projection sit in retclip/.
  size_t top_level_weights = 0;
  for (const auto& f : fs::directory_iterator(out / "open_clip"))
    top_level_weights += f.path().extension() == ".safetensors";
  EXPECT_EQ(top_level_weights, 1u);
  const StateDict ocw = load_weights(out / "open_clip" / "open_clip_model.safetensors");
  StateDict oc_visual = filter_prefix(ocw, "visual.");
  const at::Tensor oc_proj = *find_tensor(oc_visual, "visual.proj");
  oc_visual.erase(std::remove_if(oc_visual.begin(), oc_visual.end(),
                                 [](const auto& kv) { return kv.first == "visual.proj"; }),
                  oc_visual.end());
  StateDict want_visual = filter_prefix(b.weights, "visual.");
  const at::Tensor proj = *find_tensor(want_visual, "visual.proj");
  want_visual.erase(std::remove_if(want_visual.begin(), want_visual.end(),
                                   [](const auto& kv) { return kv.first == "visual.proj"; }),
                    want_visual.end());
  expect_same(oc_visual, want_visual);
  const at::Tensor wg = *find_tensor(b.weights, "global_feature_mapping.weight");
  EXPECT_EQ(oc_proj.sizes(), (std::vector<int64_t>{64, 66}));
  EXPECT_TRUE(at::allclose(oc_proj.slice(1, 0, 32),
                           proj.matmul((wg.slice(1, 0, 32) + wg.slice(1, 32)).t()), 1e-5, 1e-5));
  EXPECT_TRUE(oc_proj.slice(1, 32).eq(0).all().item<bool>());
  expect_same(map_hf_bert(strip_prefix(filter_prefix(ocw, "text.transformer."), "text.transformer.")),
              filter_prefix(b.weights, "bert."));
  StateDict heads_plus = retclip_heads(b.weights);
  heads_plus.emplace_back("visual.proj", proj);
  expect_same(load_weights(out / "open_clip" / "retclip" / "retclip_heads.safetensors"), heads_plus);
  expect_same(map_openai_clip_visual(load_weights(out / "timm")),
              filter_prefix(b.weights, "visual."));
  expect_same(map_hf_bert(load_weights(out / "hf")), filter_prefix(b.weights, "bert."));
  expect_same(load_weights(out / "hf" / "retclip_heads.safetensors"), retclip_heads(b.weights));

  const json timm = json::parse(util::read_file(out / "timm" / "config.json"));
  EXPECT_EQ(timm["architecture"], "vit_base_patch16_clip_quickgelu_224");
  EXPECT_EQ(timm["num_classes"], 32);
  EXPECT_EQ(timm["model_args"]["embed_dim"], 64);
  EXPECT_EQ(timm["model_args"]["act_layer"], "quick_gelu");
  const json hf = json::parse(util::read_file(out / "hf" / "config.json"));
  EXPECT_EQ(hf["hidden_size"], 64);
  EXPECT_EQ(hf["vocab_size"], 40);
  EXPECT_EQ(hf["architectures"][0], "BertModel");
  EXPECT_EQ(util::read_file(out / "hf" / "vocab.txt"), util::read_file(b.tokenizer));
  const json oc = json::parse(util::read_file(out / "open_clip" / "open_clip_config.json"));
  EXPECT_EQ(oc["model_cfg"]["vision_cfg"]["width"], 64);
  EXPECT_EQ(oc["model_cfg"]["embed_dim"], 66);
  EXPECT_EQ(oc["model_cfg"]["text_cfg"]["hf_proj_type"], "mlp");
  EXPECT_EQ(oc["model_cfg"]["text_cfg"]["hf_pooler_type"], "cls_pooler");
  EXPECT_EQ(fs::path(oc["model_cfg"]["text_cfg"]["hf_model_name"].get<std::string>()),
            fs::absolute(out / "open_clip" / "text").lexically_normal());
  const json side = json::parse(util::read_file(out / "retclip.json"));
  EXPECT_EQ(side["tokenizer"]["file"], "src-vocab.txt");
  EXPECT_EQ(side["files"]["full"], "full.safetensors");

  const std::string card = util::read_file(out / "timm" / "README.md");
  for (const char* want :
       {"library_name: timm", "vit-micro", "0.48145466", "32 x 32", "synth/train.csv", "steps: 12",
        "Held-out metrics", "val/loss", "local-dir:"})
    EXPECT_NE(card.find(want), std::string::npos) << want << "\n" << card;
  EXPECT_EQ(card.find("Probe results"), std::string::npos);  // none recorded
  const std::string hf_card = util::read_file(out / "hf" / "README.md");
  for (const char* want :
       {"library_name: transformers", "bert-micro", "AutoTokenizer", "context length 16"})
    EXPECT_NE(hf_card.find(want), std::string::npos) << want << "\n" << hf_card;
  util::remove_tree(dir);
}

TEST(InteropFormats, HfNeedsTheTokenizerFile) {
  const fs::path dir = temp_dir("notok");
  ExportBundle b;
  b.weights = micro_weights();
  b.sidecar = micro_sidecar("wordpiece");
  b.tokenizer = dir / "gone.txt";
  const std::string e = test::usage_error_of([&] { write_export_format(ExportFormat::kHf, b, dir); });
  EXPECT_NE(e.find("gone.txt"), std::string::npos) << e;
  EXPECT_NE(e.find("HINT"), std::string::npos) << e;
  util::remove_tree(dir);
}

TEST(InteropFormats, TimmTowersAreRefusedWhereAFormatCannotHoldThem) {
  ExportBundle b;
  b.weights = micro_weights();
  b.sidecar = micro_sidecar("wordpiece");
  // A RETFound-shaped tower: open_clip's ViT is CLIP's only.
  auto& v = b.sidecar["vision"];
  v["activation"] = "gelu";
  v["patch_bias"] = true;
  v["norm_pre"] = false;
  v["pool"] = "avg";
  v["fc_norm"] = true;
  v["norm_eps"] = 1e-6;
  std::string e = test::usage_error_of([&] { check_export_format(ExportFormat::kOpenClip, b); });
  EXPECT_NE(e.find("--format timm"), std::string::npos) << e;
  EXPECT_EQ(test::usage_error_of([&] { check_export_format(ExportFormat::kTimm, b); }), "");
  // timm ties the patch bias to pre_norm; LayerNorm eps is 1e-5 or 1e-6.
  v["patch_bias"] = false;
  e = test::usage_error_of([&] { check_export_format(ExportFormat::kTimm, b); });
  EXPECT_NE(e.find("pre_norm"), std::string::npos) << e;
  v["patch_bias"] = true;
  v["norm_eps"] = 1e-3;
  e = test::usage_error_of([&] { check_export_format(ExportFormat::kTimm, b); });
  EXPECT_NE(e.find("eps"), std::string::npos) << e;
}

TEST(InteropFormats, TimmArchitectureNamesForRegisteredSizes) {
  // The timm folder's README names the registered architecture when the tower has one.
  auto card_for = [](int64_t width, int64_t layers, int64_t heads, int64_t patch, bool clip,
                     int64_t registers) {
    json side = micro_sidecar("wordpiece");
    auto& v = side["vision"];
    v["width"] = width;
    v["layers"] = layers;
    v["heads"] = heads;
    v["patch_size"] = patch;
    v["image_size"] = 224;
    if (!clip) {
      v["activation"] = "gelu";
      v["patch_bias"] = true;
      v["norm_pre"] = false;
      v["norm_eps"] = 1e-6;
      if (registers > 0) {
        v["register_tokens"] = registers;
        v["pos_embed_prefix"] = false;
        v["layer_scale"] = 1e-5;
      } else {
        v["pool"] = "avg";
        v["fc_norm"] = true;
      }
    }
    return model_card(ExportFormat::kTimm, side);
  };
  EXPECT_NE(card_for(1024, 24, 16, 16, false, 0).find("\"vit_large_patch16_224\""),
            std::string::npos);  // RETFound
  EXPECT_NE(card_for(384, 12, 6, 14, false, 4).find("\"vit_small_patch14_reg4_dinov2\""),
            std::string::npos);  // RETFound-Green / DINOv2 with registers
  EXPECT_NE(card_for(768, 12, 12, 16, true, 0).find("\"vit_base_patch16_clip_quickgelu_224\""),
            std::string::npos);  // RET-CLIP's ViT-B-16
  // No registered size: the family's base architecture with every option in model_args.
  const std::string tiny = card_for(64, 2, 1, 8, false, 0);
  EXPECT_NE(tiny.find("\"vit_base_patch16_224\", pretrained=False, "), std::string::npos) << tiny;
  EXPECT_NE(tiny.find("global_pool=\"avg\""), std::string::npos) << tiny;
}

TEST(InteropPresets, HfPresetReadsConfigJson) {
  const fs::path dir = temp_dir("hfcfg");
  json cfg{{"vocab_size", 30522},       {"hidden_size", 384},
           {"num_hidden_layers", 6},    {"num_attention_heads", 12},
           {"intermediate_size", 1536}, {"max_position_embeddings", 512},
           {"hidden_act", "gelu"},      {"layer_norm_eps", 1e-12},
           {"type_vocab_size", 2},      {"pad_token_id", 0}};
  util::write_file_atomic(dir / "config.json", cfg.dump());
  config::ModelConfig m = micro_config();
  m.text = config::TextConfig();
  m.text.preset = "hf";
  m.init.text = dir.string();
  resolve_pretrained_presets(m);
  EXPECT_EQ(m.text.vocab_size, 30522);
  EXPECT_EQ(m.text.hidden, 384);
  EXPECT_EQ(m.text.layers, 6);
  EXPECT_EQ(m.text.heads, 12);
  EXPECT_EQ(m.text.intermediate, 1536);
  EXPECT_EQ(m.text.max_position, 512);
  const auto opts = model::retclip_options(m);
  EXPECT_EQ(opts.text().hidden(), 384);
  EXPECT_EQ(opts.text().vocab_size(), 30522);

  // A file path inside the folder works too; an override is kept.
  config::ModelConfig m2 = micro_config();
  m2.text = config::TextConfig();
  m2.text.preset = "hf";
  m2.text.layers = 3;
  m2.init.text = (dir / "model.safetensors").string();
  resolve_pretrained_presets(m2);
  EXPECT_EQ(m2.text.layers, 3);
  EXPECT_EQ(m2.text.hidden, 384);

  cfg["hidden_act"] = "relu";
  util::write_file_atomic(dir / "config.json", cfg.dump());
  std::string e = test::usage_error_of([&] { read_hf_bert_config(dir); });
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("relu"), std::string::npos) << e;
  config::ModelConfig empty = micro_config();
  empty.text.preset = "hf";
  e = test::usage_error_of([&] { resolve_pretrained_presets(empty); });
  EXPECT_NE(e.find("HINT: set model.init.text"), std::string::npos) << e;
  // Unresolved, the preset says which sizes are missing and how to get them.
  e = test::usage_error_of([&] { model::retclip_options(empty); });
  EXPECT_NE(e.find("model.init.text"), std::string::npos) << e;
  util::remove_tree(dir);
}

TEST(InteropPresets, CheckpointPresetReadsShapes) {
  const fs::path dir = temp_dir("vitcfg");
  const StateDict sd = micro_weights();
  save_weights(dir / "timm.safetensors", to_timm_vit(sd));
  save_weights(dir / "open_clip.safetensors", to_open_clip_visual(sd));
  for (const char* file : {"timm.safetensors", "open_clip.safetensors"}) {
    config::ModelConfig m = micro_config();
    m.vision = config::VisionConfig();
    m.vision.preset = "checkpoint";
    m.init.vision = (dir / file).string();
    resolve_pretrained_presets(m);
    EXPECT_EQ(m.vision.width, 64);
    EXPECT_EQ(m.vision.patch_size, 8);
    EXPECT_EQ(m.vision.image_size, 32);
    EXPECT_EQ(m.vision.layers, 2);
    EXPECT_EQ(m.vision.heads, 1);
    EXPECT_DOUBLE_EQ(m.vision.mlp_ratio, 4.0);
    EXPECT_EQ(m.embed_dim, 32);
    model::RetClip net(model::retclip_options(m));
    EXPECT_TRUE(
        apply_state_dict(*net, map_openai_clip_visual(load_weights(m.init.vision)), true, "visual.")
            .ok());
  }
  config::ModelConfig none = micro_config();
  none.vision.preset = "checkpoint";
  EXPECT_NE(test::usage_error_of([&] { resolve_pretrained_presets(none); }).find("model.init.vision"),
            std::string::npos);
  util::remove_tree(dir);
}

TEST(InteropFormats, VisionArchitectureRecordRoundTrips) {
  // A DINOv2-shaped tower: every option away from CLIP's, so each one must come back.
  const auto v = model::vision_preset("vit-micro")
                     .activation(model::VisionActivation::kGelu)
                     .patch_bias(true)
                     .norm_pre(false)
                     .register_tokens(4)
                     .pos_embed_prefix(false)
                     .layer_scale(1e-5)
                     .pool(model::VisionPool::kAvg)
                     .fc_norm(true)
                     .qkv_bias(false)
                     .norm_eps(1e-6);
  const json j = vision_architecture_json(v);
  EXPECT_EQ(j.at("activation"), "gelu");
  EXPECT_EQ(j.at("pool"), "avg");
  const auto back = vision_architecture_from_json(j, "retclip.json");
  EXPECT_EQ(vision_architecture_json(back), j);
  EXPECT_EQ(back.register_tokens(), 4);
  EXPECT_TRUE(back.fc_norm());
  // An older record (sizes only) is CLIP's architecture.
  json old = j;
  for (const char* k : {"activation", "patch_bias", "norm_pre", "register_tokens",
                        "pos_embed_prefix", "layer_scale", "pool", "fc_norm", "qkv_bias", "norm_eps"})
    old.erase(k);
  const auto clip = vision_architecture_from_json(old, "retclip.json");
  EXPECT_EQ(clip.activation(), model::VisionActivation::kQuickGelu);
  EXPECT_TRUE(clip.norm_pre());
  EXPECT_EQ(clip.pool(), model::VisionPool::kToken);
  // A missing size or an unknown name names the file.
  json no_width = j;
  no_width.erase("width");
  EXPECT_NE(test::usage_error_of([&] { vision_architecture_from_json(no_width, "x/retclip.json"); })
                .find("x/retclip.json: incomplete image tower record"),
            std::string::npos);
  json relu = j;
  relu["activation"] = "relu";
  EXPECT_NE(test::usage_error_of([&] { vision_architecture_from_json(relu, "x/retclip.json"); })
                .find("relu"),
            std::string::npos);
}
