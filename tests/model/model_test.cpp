// Unit tests of the model module: state-dict keys equal docs/MODEL.md's list, shapes, init
// statistics, padding mask, missing eyes, presets (activation checkpointing:
// activation_checkpoint_test.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "../support/model.hpp"
#include "../support/scratch.hpp"
#include "retclip/config/config.hpp"
#include "retclip/loss/tripartite.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/model/retclip.hpp"
#include "retclip/util/error.hpp"

using namespace retclip;
using test::max_diff;
using test::micro_options;
using test::tokens_for;

namespace {

/// The key list of docs/MODEL.md (State-dict keys), spelled out for `vl` vision and `tl` text
/// layers.
std::set<std::string> design_keys(int64_t vl, int64_t tl) {
  std::set<std::string> k{"visual.conv1.weight",         "visual.class_embedding",
                          "visual.positional_embedding", "visual.ln_pre.weight",
                          "visual.ln_pre.bias",          "visual.ln_post.weight",
                          "visual.ln_post.bias",         "visual.proj"};
  for (int64_t i = 0; i < vl; ++i) {
    const auto p = "visual.transformer.resblocks." + std::to_string(i) + ".";
    for (const char* s :
         {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias",
          "attn.out_proj.weight", "attn.out_proj.bias", "ln_2.weight", "ln_2.bias",
          "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"})
      k.insert(p + s);
  }
  for (const char* s : {"word_embeddings.weight", "position_embeddings.weight",
                        "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"})
    k.insert(std::string("bert.embeddings.") + s);
  for (int64_t i = 0; i < tl; ++i) {
    const auto p = "bert.encoder.layer." + std::to_string(i) + ".";
    for (const char* s : {"attention.self.query", "attention.self.key", "attention.self.value",
                          "attention.output.dense", "attention.output.LayerNorm",
                          "intermediate.dense", "output.dense", "output.LayerNorm"}) {
      k.insert(p + s + ".weight");
      k.insert(p + s + ".bias");
    }
  }
  for (const char* h : {"text_projection", "text_projection_left", "text_projection_right"})
    for (const char* s : {".0.weight", ".0.bias", ".2.weight", ".2.bias"})
      k.insert(std::string(h) + s);
  for (const char* s :
       {"global_feature_mapping.weight", "left_feature_mapping.weight",
        "right_feature_mapping.weight", "logit_scale", "logit_scale_left", "logit_scale_right"})
    k.insert(s);
  return k;
}

}  // namespace

TEST(RetClip, ParameterNamesEqualDesignKeys) {
  model::RetClip net(micro_options());
  std::set<std::string> ours;
  for (const auto& p : net->named_parameters()) ours.insert(p.key());
  const auto expected = design_keys(2, 2);
  for (const auto& k : ours) EXPECT_TRUE(expected.count(k)) << "unexpected key " << k;
  for (const auto& k : expected) EXPECT_TRUE(ours.count(k)) << "missing key " << k;
  EXPECT_EQ(ours.size(), expected.size());
  EXPECT_EQ(net->named_buffers().size(), 0u);
}

TEST(RetClip, ParameterShapes) {
  model::RetClip net(micro_options(100));
  auto p = net->named_parameters();
  EXPECT_EQ(p["visual.conv1.weight"].sizes(), torch::IntArrayRef({64, 3, 8, 8}));
  EXPECT_EQ(p["visual.positional_embedding"].sizes(), torch::IntArrayRef({17, 64}));
  EXPECT_EQ(p["visual.proj"].sizes(), torch::IntArrayRef({64, 32}));
  EXPECT_EQ(p["visual.transformer.resblocks.1.attn.in_proj_weight"].sizes(),
            torch::IntArrayRef({192, 64}));
  EXPECT_EQ(p["visual.transformer.resblocks.1.mlp.c_fc.weight"].sizes(),
            torch::IntArrayRef({256, 64}));
  EXPECT_EQ(p["bert.embeddings.word_embeddings.weight"].sizes(), torch::IntArrayRef({100, 64}));
  EXPECT_EQ(p["bert.encoder.layer.1.intermediate.dense.weight"].sizes(),
            torch::IntArrayRef({128, 64}));
  EXPECT_EQ(p["text_projection_left.2.weight"].sizes(), torch::IntArrayRef({32, 64}));
  EXPECT_EQ(p["global_feature_mapping.weight"].sizes(), torch::IntArrayRef({32, 64}));
  EXPECT_EQ(p["logit_scale"].dim(), 0);
}

TEST(RetClip, ForwardShapesAndUnitNorms) {
  torch::manual_seed(0);
  model::RetClip net(micro_options());
  auto e = net->forward(torch::randn({3, 3, 32, 32}), torch::randn({3, 3, 32, 32}),
                        tokens_for(3, 10, 100));
  for (const auto& t :
       {e.img[model::Level::kPatient], e.img[model::Level::kLeft], e.img[model::Level::kRight],
        e.txt[model::Level::kPatient], e.txt[model::Level::kLeft], e.txt[model::Level::kRight]}) {
    ASSERT_EQ(t.sizes(), torch::IntArrayRef({3, 32}));
    EXPECT_LT(max_diff(t.norm(2, 1), torch::ones({3})), 1e-5);
  }
  EXPECT_NEAR(e.logit_scale[model::Level::kPatient].item<double>(), std::log(90.0), 1e-6);
  EXPECT_EQ(net->encode_image(torch::randn({2, 3, 32, 32})).sizes(), torch::IntArrayRef({2, 32}));
  EXPECT_THROW(net->encode_image(torch::randn({2, 3, 64, 64})), Error);
}

TEST(RetClip, InitStdsFollowOpenClipVitAndBertSchemes) {
  torch::manual_seed(0);
  const int64_t w = 256, layers = 3, h = 256;
  auto opts = model::RetClipOptions()
                  .vision(model::VisionTransformerOptions()
                              .image_size(64)
                              .patch_size(8)
                              .width(w)
                              .layers(layers)
                              .embed_dim(128))
                  .text(model::BertOptions()
                            .vocab_size(2000)
                            .hidden(h)
                            .layers(2)
                            .heads(4)
                            .intermediate(512)
                            .max_position(64))
                  .embed_dim(128)
                  .logit_scale_init(std::log(50.0));
  model::RetClip net(opts);
  auto p = net->named_parameters();
  auto expect_std = [&](const std::string& key, double want) {
    const double got = p[key].std().item<double>();
    EXPECT_NEAR(got / want, 1.0, 0.06) << key << " std " << got << " expected " << want;
  };
  const double scale = std::pow(w, -0.5);
  expect_std("visual.class_embedding", scale);
  expect_std("visual.positional_embedding", scale);
  expect_std("visual.proj", scale);
  expect_std("visual.transformer.resblocks.0.attn.in_proj_weight", scale);
  expect_std("visual.transformer.resblocks.2.attn.out_proj.weight",
             scale / std::sqrt(2.0 * layers));
  expect_std("visual.transformer.resblocks.1.mlp.c_fc.weight", std::pow(2.0 * w, -0.5));
  expect_std("visual.transformer.resblocks.1.mlp.c_proj.weight", scale / std::sqrt(2.0 * layers));
  expect_std("bert.embeddings.word_embeddings.weight", 0.02);
  expect_std("bert.encoder.layer.1.attention.self.key.weight", 0.02);
  expect_std("bert.encoder.layer.0.intermediate.dense.weight", 0.02);
  expect_std("text_projection.0.weight", std::pow(h, -0.5));
  expect_std("text_projection_right.2.weight", std::pow(h, -0.5));
  EXPECT_EQ(p["visual.transformer.resblocks.0.attn.in_proj_bias"].abs().max().item<double>(), 0);
  EXPECT_EQ(p["bert.encoder.layer.0.output.dense.bias"].abs().max().item<double>(), 0);
  EXPECT_EQ(p["bert.embeddings.word_embeddings.weight"][0].abs().max().item<double>(), 0);
  EXPECT_EQ(max_diff(p["bert.encoder.layer.1.output.LayerNorm.weight"], torch::ones({h})), 0);
  EXPECT_EQ(max_diff(p["visual.ln_post.weight"], torch::ones({w})), 0);
  EXPECT_EQ(p["visual.ln_pre.bias"].abs().max().item<double>(), 0);
  for (const char* s : {"logit_scale", "logit_scale_left", "logit_scale_right"})
    EXPECT_NEAR(p[s].item<double>(), std::log(50.0), 1e-6);

  torch::manual_seed(0);
  model::RetClip again(opts);  // seeded: bit-identical
  for (const auto& q : again->named_parameters())
    EXPECT_TRUE(torch::equal(q.value(), p[q.key()])) << q.key();
}

TEST(BertEncoder, PaddingDoesNotChangeClsOfUnpaddedRows) {
  torch::manual_seed(0);
  model::BertEncoder bert(model::text_preset("bert-micro", 100));
  bert->eval();
  torch::NoGradGuard ng;
  auto short_tok = torch::randint(1, 100, {2, 7}, torch::kLong);
  auto cls = bert->forward(short_tok);
  // Same rows padded to 12 tokens, batched with a row that is 12 tokens long.
  auto padded = torch::zeros({3, 12}, torch::kLong);
  padded.slice(0, 0, 2).slice(1, 0, 7).copy_(short_tok);
  padded[2].copy_(torch::randint(1, 100, {12}, torch::kLong));
  auto cls_padded = bert->forward(padded);
  EXPECT_LT(max_diff(cls, cls_padded.slice(0, 0, 2)), 1e-6);
  // Without the mask, padding would change the result: the mask is doing the work.
  auto no_pad_value = padded.clone();
  no_pad_value.slice(0, 0, 2).slice(1, 7, 12).fill_(5);
  EXPECT_GT(max_diff(cls, bert->forward(no_pad_value).slice(0, 0, 2)), 1e-4);
}

TEST(RetClip, MissingEyeUsesPresentEyeForPatientAndIgnoresMissingImage) {
  torch::manual_seed(0);
  model::RetClip net(micro_options());
  net->eval();
  torch::NoGradGuard ng;
  auto left = torch::randn({3, 3, 32, 32}), right = torch::randn({3, 3, 32, 32});
  auto tok = tokens_for(3, 8, 100);
  auto has_left = torch::tensor({false, true, true}),
       has_right = torch::tensor({true, true, false});
  auto e = net->forward(left, right, tok, has_left, has_right);
  EXPECT_EQ(e.img[model::Level::kLeft][0].abs().max().item<double>(),
            0);  // missing left row is zero
  EXPECT_EQ(e.img[model::Level::kRight][2].abs().max().item<double>(),
            0);  // missing right row is zero
  EXPECT_NEAR(e.img[model::Level::kLeft][1].norm().item<double>(), 1.0, 1e-5);
  // Patient feature of a one-eyed patient == both eyes present, the present eye twice.
  auto l2 = left.clone(), r2 = right.clone();
  l2[0].copy_(right[0]);
  r2[2].copy_(left[2]);
  auto both = net->forward(l2, r2, tok);
  EXPECT_LT(max_diff(e.img[model::Level::kPatient], both.img[model::Level::kPatient]), 1e-6);
  // The pixels of a missing eye do not matter.
  auto l3 = left.clone();
  l3[0].normal_();
  auto e3 = net->forward(l3, right, tok, has_left, has_right);
  EXPECT_EQ(max_diff(e.img[model::Level::kPatient], e3.img[model::Level::kPatient]), 0);
  EXPECT_EQ(max_diff(e.img[model::Level::kLeft], e3.img[model::Level::kLeft]), 0);
  // Rows with both eyes present match the all-present forward.
  auto all = net->forward(left, right, tok);
  EXPECT_LT(max_diff(e.img[model::Level::kPatient][1], all.img[model::Level::kPatient][1]), 1e-6);
  EXPECT_THROW(net->forward(left, right, tok, torch::tensor({false, true, true}),
                            torch::tensor({false, true, true})),
               Error);
}

TEST(Presets, LookupOverridesAndErrors) {
  auto v = model::vision_preset("ViT-L-14");
  EXPECT_EQ(v.width(), 1024);
  EXPECT_EQ(v.num_heads(), 16);
  EXPECT_EQ(v.patch_size(), 14);
  EXPECT_EQ(v.embed_dim(), 768);
  auto t = model::text_preset("RoBERTa-wwm-ext-large-chinese");
  EXPECT_EQ(t.vocab_size(), 21128);
  EXPECT_EQ(t.hidden(), 1024);
  EXPECT_EQ(t.heads(), 16);
  EXPECT_EQ(model::text_preset("RBT3-chinese").layers(), 3);
  EXPECT_EQ(model::text_preset("bert-base-uncased").vocab_size(), 30522);
  EXPECT_EQ(model::text_preset("bert-tiny", 777).vocab_size(), 777);
  // Every name config validation accepts builds a tower.
  EXPECT_EQ(config::vision_preset_names().size(), 6u);
  EXPECT_EQ(config::text_preset_names().size(), 7u);
  for (const auto& n : config::vision_preset_names()) EXPECT_NO_THROW(model::vision_preset(n)) << n;
  for (const auto& n : config::text_preset_names())
    EXPECT_NO_THROW(model::text_preset(n, 100)) << n;
  try {
    model::vision_preset("ViT-X");
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("ViT-B-16, ViT-L-14, ViT-S-8, vit-tiny, vit-micro"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(model::text_preset("bert-tiny"), UsageError);  // vocabulary comes from tokenizer
  EXPECT_THROW(model::text_preset("gpt"), UsageError);
}

TEST(Presets, OptionsFromModelConfig) {
  config::ModelConfig cfg;
  cfg.vision.preset = "vit-tiny";
  cfg.text.preset = "bert-tiny";
  cfg.text.dropout = 0.2;
  cfg.logit_scale_init = 2.0;
  auto o = model::retclip_options(cfg, /*tokenizer_vocab=*/1234, /*grad_checkpointing=*/true);
  EXPECT_EQ(o.text().vocab_size(), 1234);
  EXPECT_EQ(o.embed_dim(), 128);
  EXPECT_DOUBLE_EQ(o.text().hidden_dropout(), 0.2);
  EXPECT_DOUBLE_EQ(o.text().attention_dropout(), 0.2);
  EXPECT_TRUE(o.vision().grad_checkpointing());
  EXPECT_DOUBLE_EQ(o.logit_scale_init(), 2.0);
  cfg.text.vocab_size = 99;  // explicit config wins over the tokenizer's
  cfg.vision.layers = 1;
  cfg.embed_dim = 64;
  o = model::retclip_options(cfg, 1234);
  EXPECT_EQ(o.text().vocab_size(), 99);
  EXPECT_EQ(o.vision().layers(), 1);
  EXPECT_EQ(o.vision().embed_dim(), 64);
  model::RetClip net(o);
  EXPECT_EQ(net->global_feature_mapping->weight.sizes(), torch::IntArrayRef({64, 128}));
  cfg.vision.patch_size = 7;  // 64 % 7 != 0
  EXPECT_THROW(model::retclip_options(cfg, 1234), UsageError);
  cfg.vision.patch_size = 0;
  cfg.text.vocab_size = 0;
  EXPECT_THROW(model::retclip_options(cfg), UsageError);  // bert-tiny needs a vocabulary
}

TEST(VisionTimmOptions, KeysOfEachArchitectureAndCLIPsUnchanged) {
  auto keys = [](const model::VisionTransformerOptions& o) {
    model::VisionTransformer vit(o);
    std::set<std::string> k;
    for (const auto& p : vit->named_parameters()) k.insert(p.key());
    return k;
  };
  const auto clip = model::vision_preset("vit-micro");
  const std::set<std::string> c = keys(clip);
  // CLIP's names (DESIGN.md section 4), nothing more.
  for (const char* k : {"conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight",
                        "transformer.resblocks.0.attn.in_proj_bias", "ln_post.bias", "proj"})
    EXPECT_EQ(c.count(k), 1u) << k;
  for (const auto& k : c)
    EXPECT_TRUE(k.find("ls_") == std::string::npos && k.find("fc_norm") == std::string::npos &&
                k.find("register") == std::string::npos && k != "conv1.bias")
        << k;
  // RETFound-shaped: patch bias, no ln_pre, fc_norm instead of ln_post.
  auto rf = clip;
  rf.patch_bias(true).norm_pre(false).pool(model::VisionPool::kAvg).fc_norm(true);
  const std::set<std::string> r = keys(rf);
  EXPECT_EQ(r.count("conv1.bias"), 1u);
  EXPECT_EQ(r.count("ln_pre.weight"), 0u);
  EXPECT_EQ(r.count("ln_post.weight"), 0u);
  EXPECT_EQ(r.count("fc_norm.weight"), 1u);
  // DINOv2-shaped: registers, layer scale, positions for the patches only, no qkv bias.
  auto dn = clip;
  dn.register_tokens(4).pos_embed_prefix(false).layer_scale(1e-5).qkv_bias(false);
  model::VisionTransformer d(dn);
  EXPECT_EQ(d->register_embedding.sizes(), torch::IntArrayRef({4, clip.width()}));
  EXPECT_EQ(d->positional_embedding.size(0), clip.grid() * clip.grid());
  EXPECT_FALSE(
      d->resblocks->ptr<model::ResidualAttentionBlockImpl>(0)->attn->in_proj_bias.defined());
  EXPECT_TRUE(d->named_parameters().contains("transformer.resblocks.1.ls_2.gamma"));
  EXPECT_FLOAT_EQ(d->named_parameters()["transformer.resblocks.0.ls_1.gamma"].max().item<float>(),
                  1e-5f);
}

TEST(VisionTimmOptions, AvgPoolIsTheMeanOfThePatchTokens) {
  // With fc_norm and pool avg, a change of the class / register tokens reaches the pooled
  // feature only through attention; with one block whose attention output is zeroed the
  // prefix tokens cannot matter at all.
  torch::manual_seed(3);
  auto o = model::vision_preset("vit-micro");
  o.layers(1).register_tokens(2).pool(model::VisionPool::kAvg).fc_norm(true);
  model::VisionTransformer vit(o);
  vit->eval();
  torch::NoGradGuard ng;
  auto blk = vit->resblocks->ptr<model::ResidualAttentionBlockImpl>(0);
  blk->attn->out_proj->weight.zero_();
  blk->attn->out_proj->bias.zero_();
  const auto x = torch::randn({2, 3, o.image_size(), o.image_size()});
  const auto a = vit->forward_pooled(x);
  vit->class_embedding.add_(1.0);
  vit->register_embedding.add_(1.0);
  EXPECT_TRUE(torch::allclose(vit->forward_pooled(x), a));
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({2, o.width()}));
}

TEST(VisionTimmOptions, ConfigBridgeAndRefusals) {
  config::ModelConfig cfg;
  cfg.vision.preset = "vit-micro";
  cfg.vision.norm_pre = false;
  cfg.vision.patch_bias = true;
  auto v = model::vision_options(cfg);
  EXPECT_EQ(v.activation(), model::VisionActivation::kGelu);  // derived: timm without ln_pre
  EXPECT_DOUBLE_EQ(v.norm_eps(), 1e-6);
  EXPECT_EQ(v.pool(), model::VisionPool::kToken);
  cfg.vision.pool = config::Pool::kAvgFcNorm;
  v = model::vision_options(cfg);
  EXPECT_EQ(v.pool(), model::VisionPool::kAvg);
  EXPECT_TRUE(v.fc_norm());
  cfg.vision.class_token = false;
  cfg.vision.pool = config::Pool::kAuto;
  EXPECT_EQ(model::vision_options(cfg).pool(), model::VisionPool::kAvg);
  cfg.vision.activation = config::Activation::kQuickGelu;  // named, it wins over the rule
  EXPECT_EQ(model::vision_options(cfg).activation(), model::VisionActivation::kQuickGelu);
  EXPECT_NE(test::usage_error_of([] {
              config::load_string("model:\n  vision:\n    activation: relu\n", "x.yaml");
            }).find("`model.vision.activation` in x.yaml line 3: expected one of auto, "
                    "quick_gelu, gelu, found `relu`"),
            std::string::npos);
  auto bad = model::vision_preset("vit-micro");
  bad.class_token(false);  // token pooling needs a class token
  EXPECT_THROW(model::VisionTransformer{bad}, UsageError);
}
