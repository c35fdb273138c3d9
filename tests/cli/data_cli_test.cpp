// End-to-end checks of the data commands through the `retclip` binary: `pack` and
// `tokenizer encode` infer the tokenizer type from the file, a shard set packed in one
// directory trains from another (its tokenizer travels with it), a failed pack leaves
// no directory, and a damaged image stops a `data.on_bad_sample: fail` run before its
// first step.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "../support/e2e.hpp"

namespace fs = std::filesystem;

namespace {

#define EXPECT_HAS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "text: " << (text) << "\nwanted: " << (part)

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Ran {
  int rc = -1;
  std::string out;  ///< stdout and stderr of this command
};

/// Runs `retclip <args>` in `cwd`; the output is also appended to `log` for failures.
Ran retclip_in(const fs::path& cwd, const std::string& args, const fs::path& log) {
  const fs::path one = log.string() + ".last";
  std::remove(one.c_str());
  Ran r;
  r.rc = retclip::test::run_logged(
      "cd '" + cwd.string() + "' && '" + retclip::test::retclip_bin() + "' " + args, one);
  r.out = slurp(one);
  std::ofstream(log, std::ios::app) << "$ (in " << cwd.string() << ") retclip " << args << "\n"
                                    << r.out;
  return r;
}

// The tiny model of the tests on 32 px shards; data.* and log.dir are added per test.
const std::string kTrain =
    "train --config " RETCLIP_SOURCE_DIR
    "/configs/tiny-cpu.yaml --set model.vision.preset=vit-micro --set "
    "model.text.preset=bert-micro --set data.image_size=32 --set data.context_length=32 "
    "--set train.batch_size=8 --set train.steps=1 --set train.threads=1 --set data.workers=1 "
    "--set optim.warmup_steps=1 --set checkpoint.every_steps=1 --set log.interval=1";

/// synth -> tokenizer train in `prep` (data/ and tok.model), shared by the tests.
class DataCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = retclip::test::fresh_dir("data_cli");
    prep_ = root_ / "prep";
    fs::create_directories(prep_);
    log_ = root_ / "commands.log";
    setup_rc_ = retclip_in(prep_,
                           "synth --out data --patients 24 --val 8 --seed 5 --size 48 "
                           "--image-format jpg",
                           log_)
                    .rc;
    if (setup_rc_ == 0)
      setup_rc_ = retclip_in(prep_,
                             "tokenizer train --manifest data/train.csv --vocab-size 120 --out "
                             "tok.model",
                             log_)
                      .rc;
  }
  void SetUp() override { ASSERT_EQ(setup_rc_, 0) << slurp(log_); }

  static fs::path root_, prep_, log_;
  static int setup_rc_;
};

fs::path DataCli::root_, DataCli::prep_, DataCli::log_;
int DataCli::setup_rc_ = -1;

}  // namespace

TEST_F(DataCli, TokenizerEncodeInfersTheTypeAndAnExplicitWrongTypeIsNamed) {
  Ran r = retclip_in(prep_, "tokenizer encode --tokenizer tok.model --text 'left eye: drusen.'",
                     log_);
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_HAS(r.out, "tokenizer  tok.model (sentencepiece, 120 tokens)");
  std::ofstream(prep_ / "vocab.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nleft\neye\n";
  r = retclip_in(prep_, "tokenizer encode --tokenizer vocab.txt --text 'left eye'", log_);
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_HAS(r.out, "(wordpiece, 7 tokens)");
  EXPECT_HAS(r.out, "ids        [2, 5, 6, 3,");
  r = retclip_in(prep_, "tokenizer encode --tokenizer tok.model --type wordpiece --text x", log_);
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_HAS(r.out, "the tokenizer type is given as wordpiece but tok.model is a sentencepiece "
                    "model");
}

TEST_F(DataCli, PackInOneDirectoryTrainFromAnother) {
  // Packed with a tokenizer path relative to prep/, type inferred from the file.
  Ran r = retclip_in(
      prep_, "pack --manifest data/train.csv --out shards --size 32 --tokenizer tok.model "
             "--context 32",
      log_);
  ASSERT_EQ(r.rc, 0) << r.out;
  const fs::path shards = prep_ / "shards";
  EXPECT_HAS(slurp(shards / "index.json"), "\"tokenizer\": \"sentencepiece:tokenizer.model\"");
  EXPECT_EQ(slurp(shards / "tokenizer.model"), slurp(prep_ / "tok.model"));

  // Trained from work/, where no tok.model exists.
  const fs::path work = root_ / "work";
  fs::create_directories(work);
  const std::string data = " --set data.train=../prep/shards --set data.val=../prep/shards";
  r = retclip_in(work, kTrain + data + " --set log.dir=run", log_);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_HAS(r.out, "sentencepiece " +
                        fs::absolute(shards / "tokenizer.model").lexically_normal().string());

  // Without the copy the error says which file is missing and where it was looked for.
  ASSERT_EQ(std::rename((shards / "tokenizer.model").c_str(), (prep_ / "moved.model").c_str()),
            0);
  r = retclip_in(work, kTrain + data + " --set log.dir=run2", log_);
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_HAS(r.out, "record their tokenizer as 'sentencepiece:tokenizer.model' (../prep/shards/"
                    "index.json) but the file 'tokenizer.model' is not there: looked for " +
                        fs::absolute(shards / "tokenizer.model").lexically_normal().string());
  EXPECT_HAS(r.out, "HINT: set data.tokenizer.path");
  // ... and the hint works.
  r = retclip_in(work,
                 kTrain + data + " --set log.dir=run3 --set data.tokenizer.path=../prep/moved.model",
                 log_);
  EXPECT_EQ(r.rc, 0) << r.out;
}

TEST_F(DataCli, AFailedPackLeavesNoDirectory) {
  Ran r = retclip_in(prep_,
                     "pack --manifest data/train.csv --out failed --size 32 --tokenizer tok.model "
                     "--tokenizer-type wordpiece",
                     log_);
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_HAS(r.out, "is a sentencepiece model");
  EXPECT_FALSE(fs::exists(prep_ / "failed"));
  r = retclip_in(prep_, "pack --manifest data/missing.csv --out failed2 --size 32", log_);
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_FALSE(fs::exists(prep_ / "failed2"));
}

TEST_F(DataCli, DamagedImageStopsAFailRunBeforeItsFirstStep) {
  // Eight patients with the synthetic photographs, then one whose left photograph was
  // cut short.
  const fs::path data = prep_ / "data";
  const std::string train = slurp(data / "train.csv");
  const std::regex jpg_re("[^,\n]+\\.jpg");
  std::string csv = "patient_id,left_image,right_image,report\n";
  std::string first;
  int n = 0;
  for (auto it = std::sregex_iterator(train.begin(), train.end(), jpg_re);
       it != std::sregex_iterator() && n < 8; ++it, ++n) {
    if (first.empty()) first = it->str();
    csv += "G" + std::to_string(n) + "," + it->str() + ",,left eye: normal fundus.\n";
  }
  ASSERT_EQ(n, 8) << train.substr(0, 400);
  const std::string jpg = slurp(data / first);
  ASSERT_GT(jpg.size(), 100u) << first;
  std::ofstream(data / "cut.jpg", std::ios::binary) << jpg.substr(0, jpg.size() / 2);
  std::ofstream(data / "damaged.csv", std::ios::binary)
      << csv << "CUT,cut.jpg,,left eye: normal fundus.\n";
  const fs::path work = root_ / "work_damaged";
  fs::create_directories(work);
  Ran r = retclip_in(work,
                     kTrain + " --set data.train=../prep/data/damaged.csv --set data.val= "
                              "--set data.tokenizer.path=../prep/tok.model --set "
                              "data.on_bad_sample=fail --set log.dir=run",
                     log_);
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_HAS(r.out, "damaged.csv row");
  EXPECT_HAS(r.out, "is a truncated JPEG");
  EXPECT_HAS(r.out, "pre-check before the first step: 1 patient has a bad image");
  EXPECT_FALSE(fs::exists(work / "run" / "checkpoints" / retclip::test::checkpoint_name(1)));
}
