// Unit tests of the Hugging Face tokenizer files (io/hf_tokenizer.hpp): the ModelProto
// reader agrees with the sentencepiece library on every piece, tokenizer.json carries
// the pieces, scores, normaliser and retclip's [CLS]/[SEP] ids, and what tokenizer.json
// cannot reproduce is refused with the reason before anything is written. That
// AutoTokenizer gives retclip's ids from these files: interop_oracle_test.cpp.
#include "../support/scratch.hpp"
#include "retclip/io/hf_tokenizer.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <functional>

#include "retclip/data/base64.hpp"
#include "retclip/data/sentencepiece_tokenizer.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace retclip;
using namespace retclip::io;

namespace {

fs::path hftok_dir(const std::string& name) { return test::scratch_dir("hftok", name); }



std::vector<std::string> corpus() {
  const std::vector<std::string> eye{"left eye", "right eye", "both eyes", "OD", "OS"};
  const std::vector<std::string> finding{
      "drusen", "hard exudates", "dot-blot haemorrhages", "cotton-wool spots", "macular oedema",
      "optic disc cupping", "tessellated fundus", "no abnormality", "vitreous haze", "naevus"};
  std::vector<std::string> out;
  for (size_t i = 0; i < 240; ++i)
    out.push_back(eye[i % eye.size()] + ": " + finding[(i * 7) % finding.size()] + ", C/D 0." +
                  std::to_string(i % 9 + 1) + "; " + eye[(i + 2) % eye.size()] + ": " +
                  finding[(i * 3 + 1) % finding.size()] + ".");
  return out;
}

fs::path train(const fs::path& dir, const std::string& type) {
  data::SentencePieceTrainOptions o;
  o.model_type = type;
  const fs::path p = dir / (type + ".model");
  data::train_sentencepiece(corpus(), 120, p.string(), o);
  return p;
}

// A micro RET-CLIP with its export sidecar, as `retclip export` hands it to the writers.
ExportBundle micro_bundle(const std::string& tok_type, const fs::path& tokenizer) {
  config::ModelConfig m;
  m.vision.preset = "vit-micro";
  m.text.preset = "bert-micro";
  m.text.vocab_size = 120;
  torch::manual_seed(5);
  model::RetClip net(model::retclip_options(m));
  ExportBundle b;
  b.weights = module_state_dict(*net);
  b.tokenizer = tokenizer;
  b.sidecar = json{
      {"step", 1},
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
        {"vocab_size", 120},
        {"hidden", 64},
        {"layers", 2},
        {"heads", 2},
        {"intermediate", 128},
        {"max_position", 64},
        {"layer_norm_eps", 1e-12},
        {"pad_id", 0},
        {"context_length", 16}}},
      {"tokenizer", {{"type", tok_type}, {"file", tokenizer.filename().string()}}},
      {"preprocessing",
       {{"mean", {0.48145466, 0.4578275, 0.40821073}}, {"std", {0.26862954, 0.26130258, 0.27577711}}}}};
  return b;
}

}  // namespace

TEST(SentencePieceModelReader, AgreesWithTheLibraryOnEveryPiece) {
  const fs::path dir = hftok_dir("reader");
  const fs::path model = train(dir, "unigram");
  const data::SentencePieceTokenizer tok(model.string());
  const SentencePieceModelSpec s = read_sentencepiece_model(model);
  ASSERT_EQ(static_cast<int64_t>(s.pieces.size()), tok.vocab_size());
  for (size_t i = 0; i < s.pieces.size(); ++i)
    EXPECT_EQ(s.pieces[i].piece, tok.id_to_piece(static_cast<int64_t>(i))) << i;
  EXPECT_EQ(s.pieces[1].type, SentencePieceModelSpec::kUnknown);
  for (int64_t id : {data::kSpClsId, data::kSpSepId, data::kSpMaskId})
    EXPECT_EQ(s.pieces[static_cast<size_t>(id)].type, SentencePieceModelSpec::kControl) << id;
  EXPECT_EQ(s.pieces[5].type, SentencePieceModelSpec::kNormal);
  EXPECT_LT(s.pieces[5].score, 0.0f);
  EXPECT_EQ(s.model_type, SentencePieceModelSpec::kUnigram);
  EXPECT_EQ(s.unk_id, 1);
  EXPECT_EQ(s.normalizer_name, "nmt_nfkc_cf");  // retclip's lowercase default
  EXPECT_FALSE(s.precompiled_charsmap.empty());
  EXPECT_TRUE(s.add_dummy_prefix && s.remove_extra_whitespaces && s.escape_whitespaces);
  EXPECT_EQ(read_sentencepiece_model(train(dir, "bpe")).model_type, SentencePieceModelSpec::kBpe);

  // Not a ModelProto: the path and the byte are named.
  const std::string bytes = util::read_file(model);
  util::write_file_atomic(dir / "cut.model", bytes.substr(0, bytes.size() / 2));
  const std::string e = test::usage_error_of([&] { read_sentencepiece_model(dir / "cut.model"); });
  EXPECT_NE(e.find("cut.model"), std::string::npos) << e;
  EXPECT_NE(e.find("byte"), std::string::npos) << e;
  util::write_file_atomic(dir / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
  EXPECT_NE(test::usage_error_of([&] { read_sentencepiece_model(dir / "vocab.txt"); }).find("vocab.txt"),
            std::string::npos);
  util::remove_tree(dir);
}

TEST(SentencePieceTokenizerJson, CarriesPiecesNormaliserAndRetclipLayout) {
  const fs::path dir = hftok_dir("json");
  const fs::path model = train(dir, "unigram");
  const SentencePieceModelSpec s = read_sentencepiece_model(model);
  const json j = sentencepiece_tokenizer_json(s, HfSpecialIds{}, model.string());
  EXPECT_EQ(j["model"]["type"], "Unigram");
  EXPECT_EQ(j["model"]["unk_id"], 1);
  ASSERT_EQ(j["model"]["vocab"].size(), s.pieces.size());
  for (size_t i = 0; i < s.pieces.size(); ++i) {
    EXPECT_EQ(j["model"]["vocab"][i][0], s.pieces[i].piece);
    EXPECT_EQ(j["model"]["vocab"][i][1].get<float>(), s.pieces[i].score);
  }
  const json& norm = j["normalizer"]["normalizers"];
  EXPECT_EQ(norm[0]["type"], "Precompiled");
  EXPECT_EQ(data::base64_decode(norm[0]["precompiled_charsmap"].get<std::string>()),
            s.precompiled_charsmap);
  EXPECT_EQ(j["pre_tokenizer"]["type"], "Metaspace");
  EXPECT_EQ(j["pre_tokenizer"]["split"], false);
  EXPECT_EQ(j["post_processor"]["special_tokens"]["[CLS]"]["ids"][0], data::kSpClsId);
  EXPECT_EQ(j["post_processor"]["special_tokens"]["[SEP]"]["ids"][0], data::kSpSepId);
  EXPECT_EQ(j["added_tokens"].size(), 5u);
  // data.tokenizer.map_quotes: the quote mapping comes first, as retclip applies it.
  const json q = sentencepiece_tokenizer_json(s, HfSpecialIds{}, model.string(), true);
  EXPECT_EQ(q["normalizer"]["normalizers"][0]["content"], "\"");
  EXPECT_EQ(q["normalizer"]["normalizers"][2]["type"], "Precompiled");
  util::remove_tree(dir);
}

TEST(HfExport, SentencePieceRunWritesTokenizerJson) {
  const fs::path dir = hftok_dir("spexport");
  const ExportBundle b = micro_bundle("sentencepiece", train(dir, "unigram"));
  write_export_format(ExportFormat::kHf, b, dir / "export");
  const fs::path hf = dir / "export" / "hf";
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "unigram.model", "config.json",
                        "model.safetensors"})
    EXPECT_TRUE(fs::exists(hf / f)) << f;
  EXPECT_FALSE(fs::exists(hf / "vocab.txt"));
  const json cfg = json::parse(util::read_file(hf / "tokenizer_config.json"));
  EXPECT_EQ(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(cfg["model_max_length"], 16);
  EXPECT_EQ(cfg["pad_token"], "[PAD]");
  const std::string card = util::read_file(hf / "README.md");
  EXPECT_NE(card.find("tokenizer.json"), std::string::npos) << card;
  EXPECT_NE(card.find("AutoTokenizer"), std::string::npos) << card;
  util::remove_tree(dir);
}

TEST(HfExport, RefusesWhatTokenizerJsonCannotReproduce) {
  const fs::path dir = hftok_dir("refuse");
  // A sentencepiece BPE model: hf and open_clip are refused with the reason, nothing written.
  const ExportBundle bpe = micro_bundle("sentencepiece", train(dir, "bpe"));
  for (ExportFormat f : {ExportFormat::kHf, ExportFormat::kOpenClip}) {
    const std::string e = test::usage_error_of([&] { write_export_format(f, bpe, dir / "export"); });
    EXPECT_NE(e.find("bpe.model"), std::string::npos) << e;
    EXPECT_NE(e.find("BPE"), std::string::npos) << e;
    EXPECT_NE(e.find("HINT"), std::string::npos) << e;
    EXPECT_FALSE(fs::exists(export_format_dir(f, dir / "export"))) << export_format_name(f);
    EXPECT_NE(test::usage_error_of([&] { check_export_format(f, bpe); }), "");
  }
  // The formats without a tokenizer are still written from the same run.
  EXPECT_EQ(test::usage_error_of([&] { check_export_format(ExportFormat::kTimm, bpe); }), "");

  // A WordPiece vocabulary without [MASK].
  util::write_file_atomic(dir / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\n");
  const ExportBundle wp = micro_bundle("wordpiece", dir / "vocab.txt");
  const std::string e = test::usage_error_of([&] { write_export_format(ExportFormat::kHf, wp, dir / "export"); });
  EXPECT_NE(e.find("[MASK]"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab.txt"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(dir / "export" / "hf"));

  // A tokenizer type with no Hugging Face form.
  ExportBundle other = micro_bundle("wordpiece", dir / "vocab.txt");
  other.sidecar["tokenizer"]["type"] = "bytes";
  EXPECT_NE(test::usage_error_of([&] { check_export_format(ExportFormat::kHf, other); }).find("'bytes'"),
            std::string::npos);
  util::remove_tree(dir);
}
