// The user's path as one journey through the retclip binary, each command reading what
// the one before wrote: synth -> tokenizer -> pack (run in one directory) -> train from
// the shards (run from another directory) -> export in every format -> embed, features,
// probe, zeroshot, finetune, predict and eval on what was exported; then open_clip's,
// timm's and transformers' one-line loaders on the export reproduce `retclip embed` and
// retclip's token ids (tests/python/journey_check.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "../support/e2e.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using retclip::test::run_logged;
using retclip::util::read_file;

namespace {

#define EXPECT_HAS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "wanted: " << (part) << "\nin:\n" << (text)

// Runs `retclip <args>` with `cwd` as the working directory; its output goes to `log`
// (kept whole) and is returned as the output of this command alone.
struct Step {
  int rc = -1;
  std::string out;
};

Step retclip_in(const fs::path& cwd, const std::string& args, const fs::path& log) {
  const fs::path one = log.parent_path() / "last-command.txt";
  retclip::util::remove_tree(one);
  Step s;
  s.rc = run_logged("cd '" + cwd.string() + "' && '" + retclip::test::retclip_bin() + "' " + args,
                    one, "OMP_NUM_THREADS=1");
  s.out = read_file(one);
  retclip::util::write_file_atomic(log, (fs::exists(log) ? read_file(log) : "") + "$ retclip " +
                                            args + "\n" + s.out);
  return s;
}

// The tiny model and schedule of the tests on the shards' 32 px images.
const std::string kTrain =
    "train --config " RETCLIP_SOURCE_DIR
    "/configs/tiny-cpu.yaml --set model.vision.preset=vit-micro --set "
    "model.text.preset=bert-micro --set data.image_size=32 --set data.context_length=32 "
    "--set data.train=../prep/shards/train --set data.val=../prep/shards/val --set "
    "train.batch_size=16 --set train.threads=1 --set data.workers=1 --set optim.warmup_steps=1 "
    "--set checkpoint.every_steps=2 --set log.interval=1 --set log.dir=run";

// The percentage of every "N/M unit (P%)" progress line: never above 100.
void expect_progress_within_total(const std::string& out) {
  static const std::regex re(R"((\d+)/(\d+) [a-z]+ \((\d+)%\))");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    EXPECT_LE(std::stoll((*it)[1]), std::stoll((*it)[2])) << (*it)[0];
    EXPECT_LE(std::stoll((*it)[3]), 100) << (*it)[0];
  }
}

}  // namespace

TEST(Journey, EveryCommandReadsWhatThePreviousOneWrote) {
  const fs::path root = retclip::test::fresh_dir("journey");
  const fs::path prep = root / "prep", work = root / "work", log = root / "journey.log";
  fs::create_directories(prep);
  fs::create_directories(work);
  auto in = [&](const fs::path& cwd, const std::string& args) {
    return retclip_in(cwd, args, log);
  };

  // Data, tokenizer and shards, prepared in prep/ with paths relative to it. The
  // tokenizer type is not given: pack tells a sentencepiece model from its content.
  ASSERT_EQ(in(prep, "synth --out data --patients 96 --val 32 --seed 3 --size 48").rc, 0)
      << read_file(log);
  ASSERT_EQ(
      in(prep, "tokenizer train --manifest data/train.csv --vocab-size 160 --out tok.model").rc, 0)
      << read_file(log);
  for (const std::string split : {"train", "val"})
    ASSERT_EQ(in(prep, "pack --manifest data/" + split + ".csv --out shards/" + split +
                           " --size 32 --tokenizer tok.model --context 32")
                  .rc,
              0)
        << read_file(log);

  // Pretraining from the shards, run from work/: the tokenizer the shards recorded is
  // found, recorded in the run's config and kept in the run directory.
  ASSERT_EQ(in(work, kTrain + " --set train.steps=4").rc, 0) << read_file(log);
  const std::string run_cfg = read_file(work / "run" / "config.yaml");
  EXPECT_HAS(run_cfg, "type: sentencepiece");
  EXPECT_TRUE(fs::exists(work / "run" / "tokenizer.model"));

  // The same log.dir again without --resume: refused, naming the directory and step.
  Step again = in(work, kTrain + " --set train.steps=6");
  EXPECT_EQ(again.rc, 2) << again.out;
  EXPECT_HAS(again.out, "log.dir run already holds a run (checkpoints up to step 4");
  EXPECT_HAS(again.out, "--resume auto");
  EXPECT_EQ(read_file(work / "run" / "metrics.jsonl").find("\"step\":5"), std::string::npos);
  // Resumed with a longer run: continues at step 4 and says the schedule changed.
  Step resumed = in(work, kTrain + " --set train.steps=6 --resume auto");
  ASSERT_EQ(resumed.rc, 0) << resumed.out;
  EXPECT_HAS(resumed.out, "train.steps: 4 -> 6 (the learning-rate schedule");
  EXPECT_HAS(resumed.out, "from step 4");

  // Export in every format; the tokenizer travels with the text tower.
  Step ex = in(work, "export --checkpoint run --out export --format retclip,open_clip,timm,hf");
  ASSERT_EQ(ex.rc, 0) << ex.out;
  const json side = json::parse(read_file(work / "export" / "retclip.json"));
  const std::string tok_file = side.at("tokenizer").at("file").get<std::string>();
  EXPECT_EQ(fs::path(tok_file).extension(), ".model") << tok_file;  // before: ""
  EXPECT_TRUE(fs::exists(work / "export" / tok_file));
  EXPECT_EQ(side.at("tokenizer").at("type"), "sentencepiece");
  // A format that cannot be written leaves nothing: before, hf failed after the retclip
  // files were already in place.
  Step bad = in(work,
                "export --checkpoint run --out export-bad --format retclip,hf --tokenizer "
                "run/config.yaml");
  EXPECT_NE(bad.rc, 0) << bad.out;
  EXPECT_FALSE(fs::exists(work / "export-bad" / "retclip.json")) << bad.out;
  Step missing = in(work, "export --checkpoint run --out export-bad --tokenizer nowhere.model");
  EXPECT_EQ(missing.rc, 2) << missing.out;
  EXPECT_HAS(missing.out, "--tokenizer nowhere.model is not a file");

  // Everything that reads an export.
  Step emb = in(work,
                "embed --weights export --manifest ../prep/data/val.csv --out emb.safetensors "
                "--save-inputs --batch 5");
  ASSERT_EQ(emb.rc, 0) << emb.out;
  expect_progress_within_total(emb.out);
  Step feats = in(work,
                  "features --weights export --data ../prep/data/val.csv --out feats.safetensors");
  ASSERT_EQ(feats.rc, 0) << feats.out;
  Step probe = in(work,
                  "probe --features feats.safetensors --data ../prep/data/val.csv --out probe "
                  "--ignore-split "
                  "--test-fraction 0.3");
  ASSERT_EQ(probe.rc, 0) << probe.out;
  EXPECT_TRUE(fs::exists(work / "probe" / "results.json"));
  Step zs = in(work, "zeroshot --weights export --data ../prep/data/val.csv --prompts " RETCLIP_SOURCE_DIR
                     "/configs/prompts/synth-findings.yaml --level eye --all --out zs.json");
  ASSERT_EQ(zs.rc, 0) << zs.out;
  EXPECT_TRUE(fs::exists(work / "zs.json"));
  Step ev = in(work, "eval --checkpoint run --data ../prep/data/val.csv");
  ASSERT_EQ(ev.rc, 0) << ev.out;
  EXPECT_HAS(ev.out, "patient");

  Step ft = in(work,
               "finetune --init export --set model.vision.preset=vit-micro --set "
               "model.text.preset=bert-micro --set data.image_size=32 --set "
               "finetune.data=../prep/data/train.csv --set finetune.level=eye --set "
               "finetune.epochs=1 --set finetune.batch_size=16 --set train.threads=1 --set "
               "data.workers=1 --set log.tensorboard=false --set log.dir=ft");
  ASSERT_EQ(ft.rc, 0) << ft.out;
  Step pred = in(work,
                 "predict --weights ft/classifier --manifest ../prep/data/val.csv --out "
                 "pred.csv --batch 7");
  ASSERT_EQ(pred.rc, 0) << pred.out;
  expect_progress_within_total(pred.out);
  EXPECT_TRUE(fs::exists(work / "pred.csv"));

  // The other libraries' one-line loaders on the export (open_clip, timm, transformers),
  // on 200 reports with punctuation and words the tokenizer never saw.
  const std::string py = std::string("python3 ") + RETCLIP_SOURCE_DIR +
                         "/tests/python/journey_check.py " + (work / "export").string() + " " +
                         (prep / "data" / "val.csv").string() + " " +
                         retclip::test::retclip_bin() + " " + (work / "check").string();
  EXPECT_EQ(run_logged(py, log, "OMP_NUM_THREADS=1"), 0) << read_file(log);
}
