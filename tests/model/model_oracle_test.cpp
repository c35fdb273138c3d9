// Numerical proof of the model against PyTorch: the text tower vs transformers.BertModel,
// the vision tower vs open_clip's VisionTransformer, and the full RET-CLIP forward, loss
// and every gradient vs tests/python/model_reference.py. Random weights, no downloads.
#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "retclip/loss/tripartite.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/model/retclip.hpp"

namespace fs = std::filesystem;
using namespace retclip;

namespace {

using TensorMap = std::map<std::string, torch::Tensor>;

bool python_ready() {
  static const bool ok =
      std::system(
          "python3 -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) "
          "for m in (\"torch\", \"transformers\", \"open_clip\")))' >/dev/null 2>&1") == 0;
  return ok;
}

void write_tensors(const fs::path& path, const TensorMap& m) {
  c10::Dict<std::string, torch::Tensor> d;
  for (const auto& [k, v] : m) d.insert(k, v.detach().contiguous());
  auto bytes = torch::pickle_save(d);
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TensorMap read_tensors(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto d = torch::pickle_load(bytes).toGenericDict();
  TensorMap m;
  for (const auto& it : d) m[it.key().toStringRef()] = it.value().toTensor();
  return m;
}

/// Runs model_reference.py `mode` on `in` and returns its outputs.
TensorMap run_reference(const std::string& mode, const TensorMap& in) {
  const fs::path dir = fs::path(RETCLIP_BINARY_DIR) / "tmp-model-oracle";
  fs::create_directories(dir);
  const auto stem =
      dir / (mode + "-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
  const auto src = fs::path(stem).concat(".in.pt"), dst = fs::path(stem).concat(".out.pt");
  write_tensors(src, in);
  const std::string cmd = "python3 " RETCLIP_SOURCE_DIR "/tests/python/model_reference.py " + mode +
                          " '" + src.string() + "' '" + dst.string() + "'";
  const int rc = std::system(cmd.c_str());
  fs::remove(src);
  if (rc != 0)
    throw std::runtime_error("reference failed (exit " + std::to_string(rc) + "): " + cmd);
  TensorMap out = read_tensors(dst);
  fs::remove(dst);
  return out;
}

torch::Tensor scalar(double v) {
  return torch::tensor(v, torch::kDouble);
}

void add_params(TensorMap& m, torch::nn::Module& module, const std::string& prefix = "") {
  for (const auto& p : module.named_parameters()) m["param." + prefix + p.key()] = p.value();
}

void add_config(TensorMap& m, const model::RetClipOptions& o) {
  const auto& v = o.vision();
  const auto& t = o.text();
  std::map<std::string, double> c{{"image_size", v.image_size()},
                                  {"patch_size", v.patch_size()},
                                  {"width", v.width()},
                                  {"vision_layers", v.layers()},
                                  {"vision_heads", v.num_heads()},
                                  {"embed_dim", o.embed_dim()},
                                  {"vocab_size", t.vocab_size()},
                                  {"hidden", t.hidden()},
                                  {"text_layers", t.layers()},
                                  {"text_heads", t.heads()},
                                  {"intermediate", t.intermediate()},
                                  {"max_position", t.max_position()},
                                  {"threads", torch::get_num_threads()}};
  for (const auto& [k, x] : c) m["cfg." + k] = scalar(x);
}

/// Tokens [B, T] with ids in [1, vocab) and trailing padding (pad id 0) of varying length.
torch::Tensor padded_tokens(int64_t b, int64_t t, int64_t vocab) {
  auto tok = torch::randint(1, vocab, {b, t}, torch::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t len = std::max<int64_t>(2, t - i * (t / std::max<int64_t>(b, 1)));
    tok.index_put_({i, torch::indexing::Slice(len, torch::indexing::None)}, 0);
  }
  return tok;
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// Prints and checks max |a - b| (abs) or max |a - b| / max |b| (relative).
void expect_close(const std::string& name, const torch::Tensor& ours, const torch::Tensor& ref,
                  double tol, bool relative = false) {
  ASSERT_TRUE(ref.defined()) << name << " missing from the reference output";
  ASSERT_EQ(ours.sizes(), ref.sizes()) << name;
  const double d = max_abs(ours, ref);
  const double denom = relative ? std::max(ref.abs().max().item<double>(), 1e-30) : 1.0;
  std::cout << "  " << name << ": max |diff| " << d
            << (relative ? " (relative " + std::to_string(d / denom) + ")" : "") << "\n";
  EXPECT_LE(d / denom, tol) << name;
}

void bert_case(int64_t vocab) {
  if (!python_ready()) GTEST_SKIP() << "python3 with torch, transformers, open_clip not available";
  torch::manual_seed(1);
  auto opts = model::RetClipOptions()
                  .vision(model::vision_preset("vit-micro"))
                  .text(model::text_preset("bert-micro", vocab))
                  .embed_dim(32);
  model::BertEncoder bert(opts.text());
  bert->eval();
  auto tokens = padded_tokens(4, 24, vocab);
  TensorMap in;
  add_config(in, opts);
  add_params(in, *bert, "bert.");
  in["in.tokens"] = tokens;
  auto ref = run_reference("bert", in);
  torch::NoGradGuard ng;
  auto hidden = bert->forward_hidden(tokens);
  expect_close("[CLS] hidden", hidden.select(1, 0), ref["out.hidden"].select(1, 0), 1e-5);
  auto real = tokens.ne(0).unsqueeze(-1);  // compare all non-pad positions too
  expect_close("non-pad hidden", hidden * real, ref["out.hidden"] * real, 1e-5);
}

}  // namespace

TEST(BertOracle, ChineseVocabMatchesTransformers) {
  bert_case(21128);
}
TEST(BertOracle, EnglishVocabMatchesTransformers) {
  bert_case(30522);
}

TEST(VisionOracle, MatchesOpenClipVisionTransformer) {
  if (!python_ready()) GTEST_SKIP() << "python3 with torch, transformers, open_clip not available";
  for (const char* preset : {"vit-micro", "vit-tiny"}) {
    torch::manual_seed(2);
    auto v = model::vision_preset(preset);
    auto opts = model::RetClipOptions().vision(v).text(model::text_preset("bert-micro", 100));
    model::VisionTransformer vit(v);
    vit->eval();
    auto images = torch::randn({3, 3, v.image_size(), v.image_size()});
    TensorMap in;
    add_config(in, opts.embed_dim(v.embed_dim()));
    add_params(in, *vit, "visual.");
    in["in.images"] = images;
    auto ref = run_reference("vit", in);
    torch::NoGradGuard ng;
    std::cout << preset << ":\n";
    expect_close("image features", vit->forward(images), ref["out.features"], 1e-5);
  }
}

namespace {

/// Deterministic weights both sides can draw without a file: parameter i (sorted by
/// name) from torch::manual_seed(1000 + i) -- the same LibTorch generator as Python's.
void synthetic_init(torch::nn::Module& module) {
  torch::NoGradGuard ng;
  auto params = module.named_parameters();
  std::vector<std::string> names = params.keys();
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i < names.size(); ++i) {
    auto& p = params[names[i]];
    torch::manual_seed(1000 + i);
    auto v = torch::randn(p.sizes()) * 0.02;
    const auto& n = names[i];
    const bool ln_weight = n.find("LayerNorm.weight") != std::string::npos ||
                           (n.find(".ln_") != std::string::npos && n.size() > 6 &&
                            n.compare(n.size() - 6, 6, "weight") == 0);
    if (n.rfind("logit_scale", 0) == 0) {
      v = torch::full(p.sizes(), std::log(90.0));
    } else if (ln_weight) {
      v = v + 1.0;
    }
    p.copy_(v);
  }
}

struct FullCase {
  model::RetClipOptions opts;
  int64_t batch, tokens;
  bool backward;
  double tol;
  bool relative;
  bool synthetic = false;  ///< weights from synthetic_init on both sides (no transfer)
};

void full_case(const FullCase& c) {
  if (!python_ready()) GTEST_SKIP() << "python3 with torch, transformers, open_clip not available";
  torch::manual_seed(3);
  model::RetClip net(c.opts);
  if (c.synthetic) synthetic_init(*net);
  net->eval();  // dropout off: the reference runs in eval mode too
  // Distinct scales, one above the clamp, so each level's temperature is exercised.
  if (!c.synthetic) {
    torch::NoGradGuard ng;
    net->logit_scale.fill_(4.0);
    net->logit_scale_left.fill_(3.5);
    net->logit_scale_right.fill_(4.8);
  }
  const int64_t s = c.opts.vision().image_size(), b = c.batch;
  auto left = torch::randn({b, 3, s, s}), right = torch::randn({b, 3, s, s});
  auto tokens = padded_tokens(b, c.tokens, c.opts.text().vocab_size());
  auto has_left = torch::ones({b}, torch::kBool), has_right = torch::ones({b}, torch::kBool);
  if (b >= 4) {
    has_left[1] = false;
    has_right[2] = false;
  }
  auto lopts = loss::TripartiteLossOptions().weight_patient(1.0).weight_left(0.7).weight_right(1.3);
  TensorMap in;
  add_config(in, c.opts);
  in["cfg.backward"] = scalar(c.backward ? 1 : 0);
  in["cfg.logit_scale_max"] = scalar(lopts.logit_scale_max());
  in["cfg.weight_patient"] = scalar(lopts.weight_patient());
  in["cfg.weight_left"] = scalar(lopts.weight_left());
  in["cfg.weight_right"] = scalar(lopts.weight_right());
  in["cfg.synthetic_init"] = scalar(c.synthetic ? 1 : 0);
  if (!c.synthetic) add_params(in, *net);
  in["in.left"] = left;
  in["in.right"] = right;
  in["in.tokens"] = tokens;
  in["in.has_left"] = has_left;
  in["in.has_right"] = has_right;

  const auto t0 = std::chrono::steady_clock::now();
  auto ref = run_reference("full", in);
  const auto t1 = std::chrono::steady_clock::now();
  torch::AutoGradMode grad(c.backward);
  auto e = net->forward(left, right, tokens, has_left, has_right);
  auto out = loss::tripartite_loss(e, lopts);
  if (c.backward) out.total.backward();
  const auto t2 = std::chrono::steady_clock::now();
  std::cout << "  reference " << std::chrono::duration<double>(t1 - t0).count() << " s, retclip "
            << std::chrono::duration<double>(t2 - t1).count() << " s\n";
  const std::pair<const char*, torch::Tensor> emb[] = {
      {"patient_img", e.img[model::Level::kPatient]}, {"left_img", e.img[model::Level::kLeft]}, {"right_img", e.img[model::Level::kRight]},
      {"patient_txt", e.txt[model::Level::kPatient]}, {"left_txt", e.txt[model::Level::kLeft]}, {"right_txt", e.txt[model::Level::kRight]},
      {"loss_patient", out.level[model::Level::kPatient].loss},
      {"loss_left", out.level[model::Level::kLeft].loss},
      {"loss_right", out.level[model::Level::kRight].loss},
      {"loss_total", out.total}};
  for (const auto& [name, t] : emb)
    expect_close(name, t.detach(), ref[std::string("out.") + name], c.tol, c.relative);
  if (!c.backward) return;
  double worst = 0;
  std::string worst_name;
  int64_t compared = 0;
  for (const auto& p : net->named_parameters()) {
    auto it = ref.find("grad." + p.key());
    ASSERT_NE(it, ref.end()) << "no reference gradient for " << p.key();
    ASSERT_TRUE(p.value().grad().defined()) << "no gradient for " << p.key();
    // fp32 gradients that sum over many positions (token-type embedding: every token)
    // reach magnitudes >> 1, so the bound is 1e-5 relative to max(1, max |ref|).
    const double d = max_abs(p.value().grad(), it->second);
    const double mag = std::max(1.0, it->second.abs().max().item<double>());
    std::cout << "  grad " << p.key() << ": max |diff| " << d << " (max |grad| " << mag << ")\n";
    EXPECT_LE(d / mag, c.tol) << p.key();
    if (d / mag >= worst) {
      worst = d / mag;
      worst_name = p.key();
    }
    ++compared;
  }
  std::cout << "  " << compared << " gradients compared, worst (scaled) " << worst_name << " "
            << worst << "\n";
}

}  // namespace

TEST(FullOracle, TinyForwardLossAndGradientsMatchReference) {
  full_case({model::RetClipOptions()
                 .vision(model::vision_preset("vit-tiny"))
                 .text(model::text_preset("bert-tiny", 1000))
                 .embed_dim(128),
             6, 16, true, 1e-5, false});
}

TEST(FullOracle, MicroMatchesReferenceWithAllEyesPresent) {
  full_case({model::RetClipOptions()
                 .vision(model::vision_preset("vit-micro"))
                 .text(model::text_preset("bert-micro", 500))
                 .embed_dim(32),
             3, 12, true, 1e-5, false});
}

TEST(FullOracle, BaseSizesForwardMatchesReference) {
  full_case({model::RetClipOptions()
                 .vision(model::vision_preset("ViT-B-16"))
                 .text(model::text_preset("RoBERTa-wwm-ext-base-chinese"))
                 .embed_dim(512),
             4, 32, false, 1e-4, true, /*synthetic=*/true});
}

// loss.duplicates: positive against the SupCon / FLAIR definition written in
// model_reference.py (float64 there, float32 here): loss and the gradients of both
// feature matrices and of the logit scale, on one level with a missing eye and repeated
// report ids; then the same through two simulated ranks with local_loss, whose mean must
// be the global value. Tolerance 1e-5 (float32 accumulation over 10 rows).
TEST(LossOracle, DuplicateReportsAsPositivesMatchReference) {
  if (!python_ready()) GTEST_SKIP() << "python3 with torch, transformers, open_clip not available";
  torch::manual_seed(11);
  const int64_t n = 10, e = 16;
  auto unit = [&] {
    return torch::nn::functional::normalize(torch::randn({n, e}),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  auto img = unit().requires_grad_(true), txt = unit().requires_grad_(true);
  auto scale = torch::tensor(2.3, torch::requires_grad());
  auto ids = torch::tensor({7, 3, 7, 9, 3, 7, 1, 4, 9, 5}, torch::kLong);
  auto valid = torch::tensor({1, 1, 1, 1, 0, 1, 1, 0, 1, 1}).to(torch::kBool);
  const double smax = std::log(100.0);
  auto opts = loss::TripartiteLossOptions().duplicates_positive(true).logit_scale_max(smax);
  auto out = loss::contrastive_level(img, txt, scale, valid, 0, -1, opts, ids);
  out.loss.backward();

  auto ref = run_reference("multipos", {{"cfg.logit_scale_max", scalar(smax)},
                                        {"in.img", img},
                                        {"in.txt", txt},
                                        {"in.log_scale", scale},
                                        {"in.valid", valid},
                                        {"in.ids", ids}});
  EXPECT_NEAR(out.loss.item<double>(), ref["out.loss"].item<double>(), 1e-5);
  EXPECT_TRUE(img.grad().to(torch::kDouble).allclose(ref["grad.img"], 1e-4, 1e-5));
  EXPECT_TRUE(txt.grad().to(torch::kDouble).allclose(ref["grad.txt"], 1e-4, 1e-5));
  EXPECT_NEAR(scale.grad().item<double>(), ref["grad.log_scale"].item<double>(), 1e-5);
  // The rows sharing an id have different embeddings here, so the targets matter.
  auto neg = loss::contrastive_level(img, txt, scale, valid, 0, -1,
                                     loss::TripartiteLossOptions().logit_scale_max(smax), ids);
  EXPECT_GT(std::abs(neg.loss.item<double>() - out.loss.item<double>()), 1e-3);

  // Two ranks (rows 0-4, 5-9) with local_loss: the plain mean over ranks is the global.
  auto local = opts;
  local.local_loss(true).world_size(2);
  auto a = loss::contrastive_level(img, txt, scale, valid, 0, 5, local, ids);
  auto b = loss::contrastive_level(img, txt, scale, valid, 5, 10, local, ids);
  EXPECT_NEAR((a.loss.item<double>() + b.loss.item<double>()) / 2, ref["out.loss"].item<double>(),
              1e-5);
  auto g = torch::autograd::grad({(a.loss + b.loss) / 2}, {img})[0];
  EXPECT_TRUE(g.to(torch::kDouble).allclose(ref["grad.img"], 1e-4, 1e-5));
}
