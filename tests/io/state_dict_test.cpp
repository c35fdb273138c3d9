// Unit tests of state-dict loading (format detection, nesting, prefixes), the key
// maps, positional-embedding resize and apply_state_dict reports. No Python needed.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "retclip/io/state_dict.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "torch_pickle.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::io;

namespace {

fs::path sd_dir() {
  fs::path d = fs::temp_directory_path() / ("retclip_io_sd_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::vector<std::string> keys(const StateDict& sd) {
  std::vector<std::string> k;
  for (const auto& p : sd) k.push_back(p.first);
  return k;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(no error)";
}

struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    fc = register_module("fc", torch::nn::Linear(3, 2));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({2})));
    running = register_buffer("running", torch::zeros({2}));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  at::Tensor running;
};

}  // namespace

TEST(StateDict, SafetensorsLoadStripsModulePrefixAndSaveRoundTrips) {
  fs::path p = sd_dir() / "ddp.safetensors";
  auto w = at::randn({2, 3});
  save_weights(p, {{"module.fc.weight", w}, {"module.fc.bias", at::zeros({2})}}, {{"k", "v"}});
  EXPECT_EQ(detect_weights_format(p), WeightsFormat::kSafetensors);
  std::map<std::string, std::string> meta;
  auto sd = load_weights(p, &meta);
  EXPECT_EQ(keys(sd), (std::vector<std::string>{"fc.bias", "fc.weight"}));  // file order
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"k", "v"}}));
  EXPECT_TRUE(at::equal(*find_tensor(sd, "fc.weight"), w));
}

TEST(StateDict, TorchZipNestedStateDictIsUnwrapped) {
  c10::impl::GenericDict inner(c10::StringType::get(), c10::AnyType::get());
  auto w = at::randn({4, 2});
  inner.insert("module.visual.proj", w);
  inner.insert("module.logit_scale", at::tensor(4.5));
  c10::impl::GenericDict outer(c10::StringType::get(), c10::AnyType::get());
  outer.insert("epoch", int64_t(3));
  outer.insert("state_dict", inner);
  std::vector<char> bytes = torch::pickle_save(c10::IValue(outer));
  fs::path p = sd_dir() / "ckpt.pt";
  util::write_file_atomic(p, std::string_view(bytes.data(), bytes.size()));
  EXPECT_EQ(detect_weights_format(p), WeightsFormat::kTorchZip);
  auto sd = load_weights(p);
  EXPECT_EQ(keys(sd), (std::vector<std::string>{"visual.proj", "logit_scale"}));
  EXPECT_TRUE(at::equal(*find_tensor(sd, "visual.proj"), w));
}

TEST(StateDict, SafetensorsWhoseHeaderLengthStartsWith0x80IsNotTakenForAPickle) {
  // A header of 128 bytes makes the first byte of the file 0x80, the pickle opcode.
  fs::path d = sd_dir();
  std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.resize(128, ' ');
  std::string file(8, '\0');
  file[0] = static_cast<char>(0x80);
  const float one = 1.0f;
  file += header + std::string(reinterpret_cast<const char*>(&one), 4);
  util::write_file_atomic(d / "w.safetensors", file);
  EXPECT_EQ(detect_weights_format(d / "w.safetensors"), WeightsFormat::kSafetensors);
  auto sd = load_weights(d / "w.safetensors");
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].second.item<float>(), 1.0f);
}

TEST(StateDict, UnknownAndLegacyFormatsAreRejectedWithHints) {
  fs::path d = sd_dir();
  util::write_file_atomic(d / "legacy.pt", std::string("\x80\x02\x8a\x0a", 4) + std::string(20, 'x'));
  EXPECT_NE(error_of([&] { load_weights(d / "legacy.pt"); }).find("legacy"), std::string::npos);
  util::write_file_atomic(d / "junk.bin", std::string(64, 'j'));
  EXPECT_NE(error_of([&] { load_weights(d / "junk.bin"); }).find("unrecognised weights format"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_weights(d / "absent.safetensors"); }).find("absent.safetensors"),
            std::string::npos);
  fs::create_directories(d / "empty_model");
  EXPECT_NE(error_of([&] { load_weights(d / "empty_model"); }).find("model.safetensors"), std::string::npos);
}

TEST(StateDict, HfFolderAndShardIndexLoad) {
  fs::path d = sd_dir() / "hf";
  fs::create_directories(d);
  auto a = at::randn({3});
  auto b = at::randn({2, 2});
  save_weights(d / "model-00001-of-00002.safetensors", {{"embeddings.a", a}});
  save_weights(d / "model-00002-of-00002.safetensors", {{"encoder.b", b}});
  util::write_file_atomic(d / "model.safetensors.index.json",
                          R"({"metadata":{},"weight_map":{"embeddings.a":"model-00001-of-00002.safetensors",)"
                          R"("encoder.b":"model-00002-of-00002.safetensors"}})");
  auto sd = load_weights(d);
  ASSERT_EQ(sd.size(), 2u);
  EXPECT_TRUE(at::equal(*find_tensor(sd, "encoder.b"), b));
  save_weights(d / "model.safetensors", {{"embeddings.a", a}});
  EXPECT_EQ(load_weights(d).size(), 1u);  // model.safetensors takes precedence
}

TEST(KeyMaps, OpenAiClipFullCheckpointKeepsVisualAndResizes) {
  StateDict sd = {
      {"positional_embedding", at::randn({8, 16})},  // text tower
      {"token_embedding.weight", at::randn({10, 16})},
      {"transformer.resblocks.0.attn.in_proj_weight", at::randn({48, 16})},
      {"text_projection", at::randn({16, 8})},
      {"logit_scale", at::tensor(4.6)},
      {"visual.conv1.weight", at::randn({16, 3, 4, 4})},
      {"visual.class_embedding", at::randn({16})},
      {"visual.positional_embedding", at::randn({1 + 4 * 4, 16})},
      {"visual.transformer.resblocks.0.attn.in_proj_weight", at::randn({48, 16})},
      {"visual.proj", at::randn({16, 8})},
  };
  auto out = map_openai_clip_visual(sd);
  EXPECT_EQ(keys(out), (std::vector<std::string>{"visual.conv1.weight", "visual.class_embedding",
                                                 "visual.positional_embedding",
                                                 "visual.transformer.resblocks.0.attn.in_proj_weight",
                                                 "visual.proj"}));
  auto resized = map_openai_clip_visual(sd, 7);
  const at::Tensor& pe = *find_tensor(resized, "visual.positional_embedding");
  EXPECT_EQ(pe.sizes(), (at::IntArrayRef{1 + 49, 16}));
  EXPECT_TRUE(at::equal(pe[0], sd[7].second[0]));  // class token kept
}

TEST(KeyMaps, OpenAiClipVisualOnlyGetsPrefixAndNonVitIsRejected) {
  StateDict sd = {{"conv1.weight", at::randn({8, 3, 2, 2})},
                  {"class_embedding", at::randn({8})},
                  {"positional_embedding", at::randn({5, 8})},
                  {"ln_post.weight", at::ones({8})}};
  auto out = map_openai_clip_visual(sd, 2);
  EXPECT_EQ(keys(out), (std::vector<std::string>{"visual.conv1.weight", "visual.class_embedding",
                                                 "visual.positional_embedding", "visual.ln_post.weight"}));
  EXPECT_TRUE(at::equal(*find_tensor(out, "visual.positional_embedding"), sd[2].second));
  StateDict rn = {{"visual.conv1.weight", at::randn({8, 3, 3, 3})}, {"visual.layer1.0.conv1.weight", at::randn({1})}};
  EXPECT_NE(error_of([&] { map_openai_clip_visual(rn); }).find("ModifiedResNet"), std::string::npos);
}

TEST(KeyMaps, HfBertWithAndWithoutPrefix) {
  StateDict base = {{"embeddings.word_embeddings.weight", at::randn({10, 4})},
                    {"embeddings.position_ids", at::arange(8).unsqueeze(0)},
                    {"embeddings.LayerNorm.gamma", at::ones({4})},
                    {"embeddings.LayerNorm.beta", at::zeros({4})},
                    {"encoder.layer.0.attention.self.query.weight", at::randn({4, 4})},
                    {"pooler.dense.weight", at::randn({4, 4})}};
  const std::vector<std::string> want = {"bert.embeddings.word_embeddings.weight",
                                         "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias",
                                         "bert.encoder.layer.0.attention.self.query.weight"};
  EXPECT_EQ(keys(map_hf_bert(base)), want);
  StateDict prefixed;
  for (auto& [k, v] : base) prefixed.emplace_back("bert." + k, v);
  prefixed.emplace_back("cls.predictions.bias", at::zeros({10}));
  EXPECT_EQ(keys(map_hf_bert(prefixed)), want);
  EXPECT_TRUE(at::equal(*find_tensor(map_hf_bert(prefixed), want[3]), base[4].second));
  EXPECT_THROW(map_hf_bert({{"visual.proj", at::ones({1})}}), UsageError);
}

TEST(KeyMaps, RetclipStripsModuleAndDropsPooler) {
  StateDict sd = {{"module.visual.proj", at::ones({2, 2})},
                  {"module.bert.pooler.dense.weight", at::ones({2, 2})},
                  {"module.bert.embeddings.position_ids", at::arange(4)},
                  {"module.logit_scale_left", at::tensor(4.5)}};
  EXPECT_EQ(keys(map_retclip(sd)), (std::vector<std::string>{"visual.proj", "logit_scale_left"}));
  EXPECT_EQ(keys(strip_prefix(sd, "module.bert.")).at(1), "pooler.dense.weight");
  EXPECT_EQ(filter_prefix(sd, "module.bert.").size(), 2u);
}

TEST(ResizePosEmbed, IdentityShapeAndConstantField) {
  auto pe = at::randn({1 + 9, 6});
  EXPECT_TRUE(resize_positional_embedding(pe, 3).is_same(pe));
  auto up = resize_positional_embedding(pe, 5);
  EXPECT_EQ(up.sizes(), (at::IntArrayRef{26, 6}));
  EXPECT_TRUE(at::equal(up[0], pe[0]));
  // Bicubic weights sum to one: a constant grid stays constant, up or down.
  auto flat = at::cat({at::randn({1, 6}), at::full({16, 6}, 0.75)}, 0);
  for (int64_t g : {2, 3, 7}) {
    auto r = resize_positional_embedding(flat, g);
    EXPECT_LT((r.slice(0, 1) - 0.75).abs().max().item<double>(), 1e-5) << "grid " << g;
  }
  auto half = resize_positional_embedding(pe.to(at::kHalf), 4);
  EXPECT_EQ(half.scalar_type(), at::kHalf);
  EXPECT_THROW(resize_positional_embedding(at::randn({11, 6}), 4), UsageError);
  EXPECT_THROW(resize_positional_embedding(pe, 0), UsageError);
}

TEST(ApplyStateDict, ReportsMissingUnexpectedAndShapeMismatch) {
  auto m = std::make_shared<TinyImpl>();
  auto w = at::randn({2, 3});
  StateDict sd = {{"fc.weight", w},
                  {"fc.bias", at::randn({3})},  // wrong shape
                  {"norm.weight", at::full({2}, 2.0, at::kDouble)},  // converted to float
                  {"extra.thing", at::ones({1})}};
  auto before_bias = m->fc->bias.clone();
  auto r = apply_state_dict(*m, sd, /*strict=*/false);
  EXPECT_EQ(r.loaded, (std::vector<std::string>{"fc.weight", "norm.weight"}));
  EXPECT_EQ(r.missing, (std::vector<std::string>{"norm.bias", "running"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra.thing"}));
  ASSERT_EQ(r.shape_mismatch.size(), 1u);
  EXPECT_EQ(r.shape_mismatch[0].name, "fc.bias");
  EXPECT_EQ(r.shape_mismatch[0].expected, (std::vector<int64_t>{2}));
  EXPECT_EQ(r.shape_mismatch[0].found, (std::vector<int64_t>{3}));
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(at::equal(m->fc->weight, w));
  EXPECT_TRUE(at::equal(m->fc->bias, before_bias));
  EXPECT_TRUE(at::allclose(m->norm->weight, at::full({2}, 2.0)));
  EXPECT_TRUE(m->fc->weight.requires_grad());
  const std::string s = r.to_string();
  EXPECT_NE(s.find("loaded 2 tensors"), std::string::npos) << s;
  EXPECT_NE(s.find("fc.bias (expected [2], found [3])"), std::string::npos) << s;
  EXPECT_NE(r.to_string(1).find("(1 more)"), std::string::npos);
}

TEST(ApplyStateDict, StrictThrowsBeforeCopyingAndPrefixFilterLimitsScope) {
  auto m = std::make_shared<TinyImpl>();
  auto before = m->fc->weight.clone();
  StateDict sd = {{"fc.weight", at::randn({2, 3})}, {"fc.bias", at::randn({2})}, {"other.x", at::ones({1})}};
  const std::string msg = error_of([&] { apply_state_dict(*m, sd, /*strict=*/true); });
  EXPECT_NE(msg.find("3 missing: norm.weight, norm.bias, running"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1 unexpected: other.x"), std::string::npos) << msg;
  EXPECT_NE(msg.find("HINT"), std::string::npos) << msg;
  EXPECT_TRUE(at::equal(m->fc->weight, before));
  auto r = apply_state_dict(*m, sd, /*strict=*/true, "fc.");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.loaded.size(), 2u);
  EXPECT_TRUE(at::equal(m->fc->weight, sd[0].second));
  // A module's own state dict loads back strictly.
  auto m2 = std::make_shared<TinyImpl>();
  EXPECT_TRUE(apply_state_dict(*m2, module_state_dict(*m), true).ok());
  EXPECT_TRUE(at::equal(m2->fc->bias, m->fc->bias));
  EXPECT_THROW(apply_state_dict(*m, {{"fc.bias", at::ones({2})}, {"fc.bias", at::ones({2})}}, false),
               UsageError);
}

TEST(StateDict, NonFiniteWeightsAreRefusedNamingFileAndTensor) {
  // Before: NaN/Inf weights loaded without a word (NaN embeddings, every step skipped).
  fs::path p = sd_dir() / "nan.safetensors";
  auto w = at::randn({2, 3});
  w[1][2] = std::numeric_limits<float>::quiet_NaN();
  save_weights(p, {{"fc.bias", at::zeros({2})}, {"fc.weight", w}, {"steps", at::ones({2}, at::kLong)}});
  auto m = error_of([&] { load_weights(p); });
  EXPECT_NE(m.find(p.string() + ": tensor 'fc.weight' holds non-finite values (1 NaN, 0 Inf of 6)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("HINT:"), std::string::npos) << m;
  // Inf in a half-precision tensor.
  auto h = at::ones({4}, at::kHalf);
  h[0] = -std::numeric_limits<float>::infinity();
  save_weights(p, {{"norm.weight", h}});
  EXPECT_NE(error_of([&] { load_weights(p); }).find("tensor 'norm.weight' holds non-finite values "
                                                    "(0 NaN, 1 Inf of 4)"),
            std::string::npos);
  // Finite weights still load.
  save_weights(p, {{"fc.weight", at::randn({2, 3})}});
  EXPECT_EQ(load_weights(p).size(), 1u);
}

TEST(LoadPretrained, ErrorsNameTheSettingAndTheFileAndHintAtSettings) {
  TinyImpl m;
  const fs::path p = sd_dir() / "pretrained.safetensors";
  auto no_cxx_names = [](const std::string& msg) {
    for (const char* f : {"map_openai_clip_visual", "map_hf_bert", "map_retclip",
                          "resize_positional_embedding", "load_weights", "non-strictly", "()"})
      EXPECT_EQ(msg.find(f), std::string::npos) << "names '" << f << "': " << msg;
    EXPECT_NE(msg.find("HINT:"), std::string::npos) << msg;
  };
  // Strict full load with a missing key.
  save_weights(p, {{"fc.weight", at::zeros({2, 3})}, {"fc.bias", at::zeros({2})},
                   {"norm.weight", at::ones({2})}, {"running", at::zeros({2})}});
  auto msg = error_of([&] { load_pretrained(m, p, Pretrained::kFull, "model.init.full"); });
  EXPECT_NE(msg.find("model.init.full = " + p.string() +
                     ": state dict does not match the model: loaded 4 tensors; 1 missing: norm.bias"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("model.vision.preset"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.init.vision"), std::string::npos) << msg;
  no_cxx_names(msg);
  // Image weights without a CLIP ViT.
  msg = error_of([&] { load_pretrained(m, p, Pretrained::kVision, "model.init.vision", 4); });
  EXPECT_NE(msg.find("model.init.vision = " + p.string() +
                     ": expected ViT image weights (OpenAI CLIP, OpenCLIP or timm) but "
                     "'visual.conv1.weight' is missing"),
            std::string::npos)
      << msg;
  no_cxx_names(msg);
  // A positional embedding that is not one class token plus a square grid.
  save_weights(p, {{"conv1.weight", at::zeros({6, 3, 2, 2})}, {"class_embedding", at::zeros({6})},
                   {"positional_embedding", at::zeros({11, 6})}});
  msg = error_of([&] { load_pretrained(m, p, Pretrained::kVision, "model.init.vision", 4); });
  EXPECT_NE(msg.find("model.init.vision = " + p.string() +
                     ": the image weights' positional embedding (visual.positional_embedding) has "
                     "shape [11, 6]; expected [1+g*g, D]"),
            std::string::npos)
      << msg;
  no_cxx_names(msg);
  // Text weights that are not BERT.
  msg = error_of([&] { load_pretrained(m, p, Pretrained::kText, "model.init.text"); });
  EXPECT_NE(msg.find("model.init.text = " + p.string() + ": expected Hugging Face BERT weights"),
            std::string::npos)
      << msg;
  no_cxx_names(msg);
  // Non-finite weights and format errors name the setting once and the file once.
  save_weights(p, {{"fc.weight", at::full({2, 3}, std::numeric_limits<float>::quiet_NaN())}});
  msg = error_of([&] { load_pretrained(m, p, Pretrained::kFull, "--weights"); });
  EXPECT_NE(msg.find("--weights = " + p.string() + ": tensor 'fc.weight' holds non-finite values "
                     "(6 NaN, 0 Inf of 6)"),
            std::string::npos)
      << msg;
  // A good file loads and reports.
  save_weights(p, module_state_dict(TinyImpl()));
  EXPECT_EQ(load_pretrained(m, p, Pretrained::kFull, "model.init.full").loaded.size(), 5u);
}

TEST(StateDict, DamagedTorchArchivesAreRejectedNotCrashed) {
  c10::impl::GenericDict sd(c10::StringType::get(), c10::AnyType::get());
  sd.insert("w", at::randn({8, 8}));
  sd.insert("b", at::arange(8));
  std::vector<char> bytes = torch::pickle_save(c10::IValue(sd));
  const std::string good(bytes.data(), bytes.size());
  const fs::path p = sd_dir() / "damaged.pt";
  size_t loaded = 0, rejected = 0;
  auto attempt = [&](const std::string& b) {
    util::write_file_atomic(p, b);
    try {
      load_weights(p);
      ++loaded;
    } catch (const UsageError&) {
      ++rejected;
    }
  };
  for (size_t n : {size_t(3), size_t(40), good.size() / 3, good.size() / 2, good.size() - 30, good.size() - 1})
    attempt(good.substr(0, n));
  EXPECT_EQ(loaded, 0u);  // every truncation is rejected
  std::mt19937 rng(3);
  for (int i = 0; i < 60; ++i) {
    std::string b = good;
    b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
    attempt(b);
  }
  EXPECT_EQ(loaded + rejected, 66u);
}

TEST(TorchPickle, DamagedPicklesAreRejectedNotCrashed) {
  c10::impl::GenericDict inner(c10::StringType::get(), c10::AnyType::get());
  inner.insert("w", at::randn({3, 4}));
  inner.insert("n", at::arange(5));
  c10::impl::GenericDict outer(c10::StringType::get(), c10::AnyType::get());
  outer.insert("step", int64_t(1) << 40);
  outer.insert("lr", 0.5);
  outer.insert("tags", std::vector<std::string>{"a", "b"});
  outer.insert("model", inner);
  std::vector<char> bytes = torch::pickle_save(c10::IValue(outer));
  const fs::path p = sd_dir() / "pickle_src.pt";
  util::write_file_atomic(p, std::string_view(bytes.data(), bytes.size()));
  caffe2::serialize::PyTorchStreamReader zip(p.string());
  auto record = [&](const std::string& name) {
    RETCLIP_CHECK_USAGE(zip.hasRecord(name), "no record ", name);
    auto [ptr, n] = zip.getRecord(name);
    return std::string(static_cast<const char*>(ptr.get()), n);
  };
  const std::string pkl = record("data.pkl");
  auto sd = io::detail::unpickle_state_dict(pkl, record, "mem");
  ASSERT_EQ(keys(sd), (std::vector<std::string>{"w", "n"}));
  EXPECT_TRUE(at::equal(sd[1].second, at::arange(5)));

  size_t ok = 0, rejected = 0;
  auto attempt = [&](std::string_view b) {
    try {
      io::detail::unpickle_state_dict(b, record, "mem");
      ++ok;
    } catch (const UsageError&) {
      ++rejected;
    }
  };
  for (size_t n = 0; n < pkl.size(); ++n) attempt(std::string_view(pkl).substr(0, n));
  EXPECT_EQ(ok, 0u);  // no strict prefix is a complete pickle
  std::mt19937 rng(11);
  for (int i = 0; i < 5000; ++i) {
    std::string b = pkl;
    for (int k = 0, flips = 1 + static_cast<int>(rng() % 3); k < flips; ++k)
      b[rng() % b.size()] = static_cast<char>(rng() % 256);
    attempt(b);
  }
  EXPECT_EQ(ok + rejected, pkl.size() + 5000);
  auto no_records = [](const std::string& name) -> std::string {
    throw UsageError("no record " + name);
  };
  EXPECT_THROW(io::detail::unpickle_state_dict(pkl, no_records, "mem"), UsageError);
}
