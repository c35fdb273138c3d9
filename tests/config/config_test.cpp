// Tests of the config module: YAML loading, --set overrides, validation messages
// (each asserts the exact key path and, where there is one, the file line), the
// to_yaml round trip, the hash, and the two shipped configs.
#include <gtest/gtest.h>

#include <cmath>

#include <filesystem>
#include <fstream>

#include "retclip/config/config.hpp"
#include "retclip/util/error.hpp"

namespace fs = std::filesystem;
using retclip::UsageError;
using namespace retclip::config;

namespace {

#define EXPECT_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg) << "\nwanted: " << (part)

/// The UsageError message `f` throws ("" and a failure when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UsageError";
  return "";
}

Config from(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  return load_string(yaml, "x.yaml", sets);
}
std::string err(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  return error_of([&] { from(yaml, sets); });
}
std::string set_err(const std::vector<std::string>& sets) {
  return error_of([&] { load("", sets); });
}

fs::path tmp_dir() {
  fs::path d = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "config";
  fs::create_directories(d);
  return d;
}
fs::path write_tmp(const std::string& name, const std::string& text) {
  fs::path p = tmp_dir() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

// ------------------------------------------------------------------- defaults

TEST(ConfigDefaults, FollowRetClip) {
  Config c;
  EXPECT_EQ(c.optim.lr, 3e-5);
  EXPECT_EQ(c.optim.weight_decay, 0.001);
  EXPECT_EQ(c.optim.betas[1], 0.98);
  EXPECT_EQ(c.optim.eps, 1e-6);
  EXPECT_EQ(c.optim.warmup_steps, 50);
  EXPECT_EQ(c.optim.schedule, "cosine");
  EXPECT_EQ(c.data.context_length, 100);
  EXPECT_EQ(c.train.batch_size, 256);
  EXPECT_EQ(c.data.augment.crop_scale[0], 0.9);
  EXPECT_EQ(c.data.mean[0], 0.48145466);
  EXPECT_NO_THROW(validate(c));
  EXPECT_NO_THROW(load(""));
}

// -------------------------------------------------------------- unknown keys

TEST(ConfigUnknownKey, TopLevelSection) {
  auto m = err("model:\n  embed_dim: 64\noptimm:\n  lr: 1\n");
  EXPECT_HAS(m, "unknown key `optimm` in x.yaml line 3; did you mean `optim`?");
}

TEST(ConfigUnknownKey, InSectionWithLine) {
  auto m =
      err("# run\noptim:\n  lr: 1e-4\n\n  weight_decay: 0.1\n  eps: 1e-8\n  warmup_step: 10\n");
  EXPECT_HAS(m,
             "unknown key `optim.warmup_step` in x.yaml line 7; did you mean "
             "`optim.warmup_steps`?");
}

TEST(ConfigUnknownKey, NestedSection) {
  auto m = err("data:\n  augment:\n    enabled: true\n    crop_scal: [0.5, 1]\n");
  EXPECT_HAS(m,
             "unknown key `data.augment.crop_scal` in x.yaml line 4; did you mean "
             "`data.augment.crop_scale`?");
}

TEST(ConfigUnknownKey, ThreeDeepInModel) {
  auto m = err("model:\n  vision:\n    patch_sise: 16\n");
  EXPECT_HAS(m,
             "unknown key `model.vision.patch_sise` in x.yaml line 3; did you mean "
             "`model.vision.patch_size`?");
}

TEST(ConfigUnknownKey, KeyOfAnotherSectionIsSuggested) {
  auto m = err("train:\n  warmup_steps: 10\n");
  EXPECT_HAS(m,
             "unknown key `train.warmup_steps` in x.yaml line 2; did you mean "
             "`optim.warmup_steps`?");
}

TEST(ConfigUnknownKey, NameInSeveralSectionsOffersAll) {
  auto m = err("train:\n  dir: runs/x\n");
  EXPECT_HAS(m,
             "unknown key `train.dir` in x.yaml line 2; did you mean `checkpoint.dir` or "
             "`log.dir`?");
}

TEST(ConfigUnknownKey, EmptyKeyName) {
  auto m = err("optim:\n  : 3\n");
  EXPECT_HAS(m, "x.yaml line 2: expected a key name in `optim`, found nothing");
}

TEST(ConfigUnknownKey, NoCloseMatchListsValidKeys) {
  auto m = err("loss:\n  zzzzzzzz: 1\n");
  EXPECT_HAS(m,
             "unknown key `loss.zzzzzzzz` in x.yaml line 2. Valid keys in `loss`: weights, "
             "gather, local_loss, duplicates, logit_scale_max");
}

TEST(ConfigUnknownKey, DuplicateKey) {
  auto m = err("optim:\n  lr: 1\n  lr: 2\n");
  EXPECT_HAS(m, "duplicate key `optim.lr` in x.yaml line 3 (first given at line 2)");
}

// ----------------------------------------------------------------- wrong types

TEST(ConfigType, StringForInt) {
  auto m = err("train:\n  batch_size: lots\n");
  EXPECT_HAS(m, "`train.batch_size` in x.yaml line 2: expected an integer, found `lots`");
}

TEST(ConfigType, FloatForInt) {
  auto m = err("train:\n  steps: 10\n  batch_size: 3.5\n");
  EXPECT_HAS(m, "`train.batch_size` in x.yaml line 3: expected an integer, found `3.5`");
}

TEST(ConfigType, ListForScalar) {
  auto m = err("optim:\n  lr: [1, 2]\n");
  EXPECT_HAS(m, "`optim.lr` in x.yaml line 2: expected a number, found a list of 2 items");
}

TEST(ConfigType, MapForScalar) {
  auto m = err("log:\n  level:\n    console: info\n");
  EXPECT_HAS(m, "`log.level` in x.yaml line 2: expected a string, found a mapping");
}

TEST(ConfigType, QuotedNumberIsAString) {
  auto m = err("data:\n  workers: \"3\"\n");
  EXPECT_HAS(m, "`data.workers` in x.yaml line 2: expected an integer, found the quoted string");
}

TEST(ConfigType, EmptyValueForNumber) {
  auto m = err("optim:\n  eps:\n");
  EXPECT_HAS(m, "`optim.eps` in x.yaml line 2: expected a number, found nothing");
}

TEST(ConfigType, Booleans) {
  auto c = from(
      "data:\n  drop_last: no\n  augment:\n    hflip: yes\n    enabled: 0\n"
      "loss:\n  gather: False\n  local_loss: 1\n");
  EXPECT_FALSE(c.data.drop_last);
  EXPECT_TRUE(c.data.augment.hflip);
  EXPECT_FALSE(c.data.augment.enabled);
  EXPECT_FALSE(c.loss.gather);
  EXPECT_TRUE(c.loss.local_loss);
  auto m = err("loss:\n  gather: maybe\n");
  EXPECT_HAS(m,
             "`loss.gather` in x.yaml line 2: expected a boolean (true/false/yes/no/1/0), "
             "found `maybe`");
}

TEST(ConfigType, StringListNeedsAList) {
  auto m = err("optim:\n  no_decay: bias\n");
  EXPECT_HAS(m,
             "`optim.no_decay` in x.yaml line 2: expected a list of strings like [bias, ln_], "
             "found `bias`");
  auto c = from("optim:\n  no_decay:\n    - bias\n    - norm\n");
  EXPECT_EQ(c.optim.no_decay, (std::vector<std::string>{"bias", "norm"}));
}

TEST(ConfigType, FixedArrayLength) {
  auto m = err("optim:\n  betas: [0.9]\n");
  EXPECT_HAS(m,
             "`optim.betas` in x.yaml line 2: expected a list of 2 numbers like [0.9, 0.98], "
             "found a list of 1 item");
  m = err("data:\n  mean: [0.5, 0.5]\n");
  EXPECT_HAS(m, "`data.mean` in x.yaml line 2: expected a list of 3 numbers");
}

TEST(ConfigType, FixedArrayBadItem) {
  auto m = err("optim:\n  betas: [0.9, high]\n");
  EXPECT_HAS(m,
             "`optim.betas` in x.yaml line 2: expected a list of 2 numbers like [0.9, 0.98], "
             "found `high` at item 2");
  m = err("optim:\n  betas: [0.9, [1]]\n");
  EXPECT_HAS(m, "found a nested list at item 2");
}

TEST(ConfigType, SectionNotAMapping) {
  auto m = err("optim: 3\n");
  EXPECT_HAS(m,
             "`optim` in x.yaml line 1: expected a section (a mapping with keys such as lr, "
             "weight_decay,");
  m = err("data:\n  augment: [1, 2]\n");
  EXPECT_HAS(m, "`data.augment` in x.yaml line 2: expected a section");
}

TEST(ConfigType, TopLevelNotAMapping) {
  auto m = err("- optim\n- data\n");
  EXPECT_HAS(m,
             "x.yaml line 1: expected a mapping of sections (model, data, loss, optim, train, "
             "checkpoint, log, dist, eval, finetune) at the top level, found a list");
}

TEST(ConfigType, EmptySectionKeepsDefaults) {
  auto c = from("optim:\nlog:\n  interval: 5\n");
  EXPECT_EQ(c.optim.lr, 3e-5);
  EXPECT_EQ(c.log.interval, 5);
}

// ---------------------------------------------------------------- value checks

struct RangeCase {
  const char* name;
  const char* yaml;  ///< the bad key is always on line 2 or 3 (see `line`)
  const char* expect;
};

class ConfigRange : public ::testing::TestWithParam<RangeCase> {};

TEST_P(ConfigRange, NamesKeyLineExpectedAndFound) {
  auto m = err(GetParam().yaml);
  EXPECT_HAS(m, GetParam().expect);
}

const RangeCase kRangeCases[] = {
    {"lr", "optim:\n  lr: -1\n", "`optim.lr` in x.yaml line 2: expected a number > 0, found -1"},
    {"max_image_pixels", "data:\n  max_image_pixels: 40\n",
     "`data.max_image_pixels` in x.yaml line 2: expected 0 (no limit) or at least 65536 (256 x "
     "256), found 40. HINT: the limit counts pixels"},
    {"max_image_pixels_negative", "data:\n  max_image_pixels: -1\n",
     "`data.max_image_pixels` in x.yaml line 2: expected 0 (no limit) or at least 65536"},
    {"lr_zero", "optim:\n  lr: 0\n", "`optim.lr` in x.yaml line 2: expected a number > 0, found 0"},
    {"weight_decay", "optim:\n  weight_decay: -0.1\n",
     "`optim.weight_decay` in x.yaml line 2: expected a number >= 0, found -0.1"},
    {"betas", "optim:\n  betas: [0.9, 1.0]\n",
     "`optim.betas` in x.yaml line 2: expected a number in [0, 1), found 1"},
    {"eps", "optim:\n  eps: 0\n", "`optim.eps` in x.yaml line 2: expected a number > 0, found 0"},
    {"warmup", "optim:\n  warmup_steps: -5\n",
     "`optim.warmup_steps` in x.yaml line 2: expected an integer >= 0, found -5"},
    {"schedule", "optim:\n  schedule: cosin\n",
     "`optim.schedule` in x.yaml line 2: expected one of cosine, constant, const-cooldown, found "
     "`cosin`. HINT: did you mean `cosine`?"},
    {"accum", "optim:\n  accum_steps: 0\n",
     "`optim.accum_steps` in x.yaml line 2: expected an integer >= 1, found 0"},
    {"batch", "train:\n  batch_size: 0\n",
     "`train.batch_size` in x.yaml line 2: expected an integer >= 1, found 0"},
    {"steps", "train:\n  steps: -1\n",
     "`train.steps` in x.yaml line 2: expected an integer >= 0, found -1"},
    {"epochs", "train:\n  steps: 0\n  epochs: 0\n",
     "`train.epochs` in x.yaml line 3: expected an integer >= 1, found 0"},
    {"precision", "train:\n  precision: fp8\n",
     "`train.precision` in x.yaml line 2: expected one of fp32, bf16, fp16, found `fp8`"},
    {"device", "train:\n  device: gpu\n",
     "`train.device` in x.yaml line 2: expected one of auto, cpu, cuda, found `gpu`"},
    {"threads", "train:\n  threads: -2\n",
     "`train.threads` in x.yaml line 2: expected an integer >= 0, found -2"},
    {"image_size_small", "data:\n  image_size: 8\n",
     "`data.image_size` in x.yaml line 2: expected an integer in [16, 4096], found 8"},
    {"image_size_big", "data:\n  image_size: 5000\n",
     "`data.image_size` in x.yaml line 2: expected an integer in [16, 4096], found 5000"},
    {"image_size_patch", "model:\n  vision:\n    patch_size: 16\ndata:\n  image_size: 100\n",
     "`data.image_size` in x.yaml line 5: expected a multiple of model.vision.patch_size (16), "
     "found 100"},
    {"context_short", "data:\n  context_length: 3\n",
     "`data.context_length` in x.yaml line 2: expected an integer in [4, 512], found 3"},
    {"context_long", "data:\n  context_length: 513\n",
     "`data.context_length` in x.yaml line 2: expected an integer in [4, 512], found 513"},
    {"crop_scale", "data:\n  augment:\n    crop_scale: [0.9, 0.5]\n",
     "`data.augment.crop_scale` in x.yaml line 3: expected [a, b] with 0 < a <= b <= 1, found "
     "[0.9, 0.5]"},
    {"crop_scale_zero", "data:\n  augment:\n    crop_scale: [0, 1]\n",
     "`data.augment.crop_scale` in x.yaml line 3: expected [a, b] with 0 < a <= b <= 1"},
    {"color_jitter", "data:\n  augment:\n    color_jitter: 1.5\n",
     "`data.augment.color_jitter` in x.yaml line 3: expected a number in [0, 1], found 1.5"},
    {"random_erasing", "data:\n  augment:\n    random_erasing: -0.1\n",
     "`data.augment.random_erasing` in x.yaml line 3: expected a number in [0, 1], found -0.1"},
    {"preprocess", "data:\n  preprocess: crop\n",
     "`data.preprocess` in x.yaml line 2: expected one of fundus_crop, resize, found `crop`"},
    {"source_size_small", "data:\n  image_size: 224\n  source_size: 200\n",
     "`data.source_size` in x.yaml line 3: expected 0 (= data.image_size) or a size in "
     "[data.image_size (224), 8192], found 200. HINT: shards packed at 256 px"},
    {"interpolation", "data:\n  augment:\n    interpolation: lanczos\n",
     "`data.augment.interpolation` in x.yaml line 3: expected one of bilinear, bicubic, found "
     "`lanczos`"},
    {"jitter_order", "data:\n  augment:\n    jitter_order: shuffled\n",
     "`data.augment.jitter_order` in x.yaml line 3: expected one of fixed, random, found "
     "`shuffled`"},
    {"on_bad_sample", "data:\n  on_bad_sample: ignore\n",
     "`data.on_bad_sample` in x.yaml line 2: expected one of skip, fail, found `ignore`"},
    {"format", "data:\n  format: csv\n",
     "`data.format` in x.yaml line 2: expected one of auto, manifest, retclip, shards, found "
     "`csv`"},
    {"tokenizer", "data:\n  tokenizer:\n    type: bpe\n",
     "`data.tokenizer.type` in x.yaml line 3: expected one of auto, wordpiece, sentencepiece, "
     "found "
     "`bpe`"},
    {"workers", "data:\n  workers: -1\n",
     "`data.workers` in x.yaml line 2: expected an integer >= 0, found -1"},
    {"prefetch", "data:\n  prefetch: 0\n",
     "`data.prefetch` in x.yaml line 2: expected an integer >= 1, found 0"},
    {"std", "data:\n  std: [0.2, 0, 0.2]\n",
     "`data.std` in x.yaml line 2: expected a number > 0, found 0"},
    {"loss_weight", "loss:\n  weights:\n    left: -1\n",
     "`loss.weights.left` in x.yaml line 3: expected a number >= 0, found -1"},
    {"loss_all_zero", "loss:\n  weights:\n    patient: 0\n    left: 0\n    right: 0\n",
     "`loss.weights`: expected at least one weight > 0, found all three 0"},
    {"logit_scale_max", "loss:\n  logit_scale_max: 0\n",
     "`loss.logit_scale_max` in x.yaml line 2: expected a number > 0, found 0"},
    {"keep_last", "checkpoint:\n  keep_last: 0\n",
     "`checkpoint.keep_last` in x.yaml line 2: expected an integer >= 1, found 0"},
    {"every_steps", "checkpoint:\n  every_steps: 0\n",
     "`checkpoint.every_steps` in x.yaml line 2: expected an integer >= 1, found 0"},
    {"interval", "log:\n  interval: 0\n",
     "`log.interval` in x.yaml line 2: expected an integer >= 1, found 0"},
    {"level", "log:\n  level: verbose\n",
     "`log.level` in x.yaml line 2: expected one of debug, info, warn, error, found `verbose`"},
    {"backend", "dist:\n  backend: mpi\n",
     "`dist.backend` in x.yaml line 2: expected one of auto, gloo, nccl, found `mpi`"},
    {"timeout", "dist:\n  timeout_s: 0\n",
     "`dist.timeout_s` in x.yaml line 2: expected a number > 0, found 0"},
    {"dropout", "model:\n  text:\n    dropout: 1.0\n",
     "`model.text.dropout` in x.yaml line 3: expected a number in [0, 1), found 1"},
    {"seed_negative", "train:\n  seed: -3\n",
     "`train.seed` in x.yaml line 2: expected a non-negative integer, found `-3`"},
};

INSTANTIATE_TEST_SUITE_P(Keys, ConfigRange, ::testing::ValuesIn(kRangeCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ConfigValidate, StepsMakeEpochsIrrelevant) {
  auto c = from("train:\n  steps: 10\n  epochs: 0\n");
  EXPECT_EQ(c.train.steps, 10);
}

TEST(ConfigValidate, FinetuneZeroShotHeadNeedsPostProjPromptsAndInit) {
  EXPECT_EQ(Config{}.finetune.head_init, "random");
  EXPECT_HAS(err("finetune:\n  head_init: text\n"),
             "`finetune.head_init` in x.yaml line 2: expected one of random, zeroshot, found "
             "`text`");
  const std::string ok =
      "finetune:\n  head_init: zeroshot\n  feature: post_proj\n  prompts: p.yaml\n"
      "  init: export\n";
  const Config c = from(ok);
  EXPECT_EQ(c.finetune.head_init, "zeroshot");
  EXPECT_EQ(c.finetune.prompts, "p.yaml");
  // feature pre_proj (the default): the text embeddings are not in that space.
  EXPECT_HAS(err("finetune:\n  head_init: zeroshot\n  prompts: p.yaml\n  init: export\n"),
             "`finetune.feature`: expected post_proj with finetune.head_init=zeroshot, found "
             "`pre_proj`. HINT: --set finetune.feature=post_proj");
  EXPECT_HAS(err(ok, {"finetune.prompts="}),
             "`finetune.prompts` in --set finetune.prompts=: expected a prompt file with "
             "finetune.head_init=zeroshot, found nothing. HINT: --set finetune.prompts=");
  EXPECT_HAS(err(ok, {"finetune.init="}),
             "`finetune.init` in --set finetune.init=: expected a retclip export with the text "
             "tower or a pretraining checkpoint with finetune.head_init=zeroshot, found nothing. "
             "HINT: --set finetune.init=");
  // random heads need none of them.
  EXPECT_NO_THROW(from("finetune:\n  prompts: ''\n"));
}

TEST(ConfigValidate, BuiltInCodeNamesKeyWithoutLine) {
  Config c;
  c.optim.lr = 0;
  auto m = error_of([&] { validate(c); });
  EXPECT_EQ(m.rfind("`optim.lr`: expected a number > 0, found 0", 0), 0u) << m;
  c = Config{};
  c.data.augment.crop_scale = {0.5, 1.5};
  m = error_of([&] { validate(c); });
  EXPECT_HAS(m,
             "`data.augment.crop_scale`: expected [a, b] with 0 < a <= b <= 1, found [0.5, 1.5]");
}

// data.augment and finetune.augment are checked by the same rules, NaN included.
TEST(ConfigValidate, BothAugmentBlocksSameRules) {
  for (const std::string block : {"data.augment", "finetune.augment"}) {
    Config c;
    AugmentConfig& a = block == "data.augment" ? c.data.augment : c.finetune.augment;
    a.crop_scale = {std::nan(""), 1.0};
    auto m = error_of([&] { validate(c); });
    EXPECT_HAS(m, "`" + block + ".crop_scale`: expected a finite number, found nan");
    a.crop_scale = {0.5, 1.0};
    a.jitter_order = "sometimes";
    m = error_of([&] { validate(c); });
    EXPECT_HAS(m, "`" + block + ".jitter_order`: expected one of fixed, random");
  }
}

// -------------------------------------------------------------- file problems

TEST(ConfigFile, Missing) {
  std::string path = (tmp_dir() / "no-such.yaml").string();
  auto m = error_of([&] { load(path); });
  EXPECT_HAS(m, "config file `" + path + "` not found");
}

TEST(ConfigFile, Empty) {
  auto p = write_tmp("empty.yaml", "");
  auto m = error_of([&] { load(p.string()); });
  EXPECT_HAS(m, "config file " + p.string() + " is empty");
  p = write_tmp("comments.yaml", "# nothing here\n\n# still nothing\n");
  m = error_of([&] { load(p.string()); });
  EXPECT_HAS(m, "config file " + p.string() + " is empty (only comments)");
}

TEST(ConfigFile, SyntaxErrorNamesLine) {
  auto p =
      write_tmp("syntax.yaml", "optim:\n  lr: 1e-4\n  betas: [0.9, 0.98\ntrain:\n  steps: 3\n");
  auto m = error_of([&] { load(p.string()); });
  EXPECT_HAS(m, "YAML syntax error in " + p.string() + " line ");
  m = err("optim:\n  lr: 1\n   eps: : 2\n");
  EXPECT_HAS(m, "YAML syntax error in x.yaml line 3");
}

TEST(ConfigFile, NonUtf8Bytes) {
  auto m = err("optim:\n  lr: 1e-4\n# caf\xe9 au lait\n");
  EXPECT_HAS(m, "x.yaml line 3 column 6: bytes that are not UTF-8");
  // Valid multi-byte text (Chinese, as RET-CLIP reports) passes.
  auto c = from("data:\n  train: \"\xe6\x95\xb0\xe6\x8d\xae/train.csv\"\n");
  EXPECT_EQ(c.data.train, "\xe6\x95\xb0\xe6\x8d\xae/train.csv");
}

TEST(ConfigFile, SecondYamlDocumentIsRefused) {
  // Before: the keys after `---` were dropped silently and the file loaded.
  auto m = err("optim:\n  lr: 1e-4\n---\ntrain:\n  steps: 3\n");
  EXPECT_HAS(m, "x.yaml line 3: a second YAML document starts here");
  EXPECT_HAS(m, "HINT: delete the `---` line");
  // A `---` that opens the first document, comments before it, and a trailing
  // empty document are fine.
  EXPECT_EQ(from("# run\n---\ntrain:\n  steps: 3\n").train.steps, 3);
  EXPECT_EQ(from("train:\n  steps: 4\n---\n").train.steps, 4);
  // The second document is found wherever it starts, also after `...`.
  m = err("---\ntrain:\n  steps: 3\n...\n--- # more\noptim:\n  lr: 1\n");
  EXPECT_HAS(m, "x.yaml line 5: a second YAML document");
}

TEST(ConfigFile, ErrorInRealFileNamesPathAndLine) {
  auto p = write_tmp("bad-lr.yaml", "optim:\n  weight_decay: 0.1\n  lr: -3\n");
  auto m = error_of([&] { load(p.string()); });
  EXPECT_HAS(m, "`optim.lr` in " + p.string() + " line 3: expected a number > 0, found -3");
}

// ------------------------------------------------------------------- overrides

TEST(ConfigOverride, NestedScalarsAndLists) {
  auto c = load(
      "", {"data.augment.color_jitter=0.5", "optim.betas=[0.9,0.999]", "optim.no_decay=[bias, ln_]",
           "data.augment.hflip=yes", "data.train=runs/demo/data/train.csv", "train.seed=42",
           "model.vision.preset=vit-tiny", "data.val="});
  EXPECT_EQ(c.data.augment.color_jitter, 0.5);
  EXPECT_EQ(c.optim.betas[1], 0.999);
  EXPECT_EQ(c.optim.no_decay, (std::vector<std::string>{"bias", "ln_"}));
  EXPECT_TRUE(c.data.augment.hflip);
  EXPECT_EQ(c.data.train, "runs/demo/data/train.csv");
  EXPECT_EQ(c.train.seed, 42u);
  EXPECT_EQ(c.model.vision.preset, "vit-tiny");
  EXPECT_EQ(c.data.val, "");
  EXPECT_TRUE(load("", {"optim.no_decay=[]"}).optim.no_decay.empty());
}

TEST(ConfigOverride, BadSyntax) {
  EXPECT_HAS(set_err({"foo"}),
             "bad override `--set foo`: there is no '=' between the key and "
             "the value");
  EXPECT_HAS(set_err({"=3"}), "bad override `--set =3`: the key before '=' is empty");
  EXPECT_HAS(set_err({"a.b.c"}), "bad override `--set a.b.c`: there is no '='");
  EXPECT_HAS(set_err({"optim..lr=1"}),
             "bad override `--set optim..lr=1`: the key `optim..lr` has "
             "an empty part");
  EXPECT_HAS(set_err({"optim.betas=[0.9,0.99"}),
             "bad override `--set optim.betas=[0.9,0.99`: a "
             "list must be written [a,b,...]");
  EXPECT_HAS(set_err({"optim.betas=[0.9,,0.99]"}), "the list has an empty item");
}

TEST(ConfigOverride, UnknownKeySuggests) {
  EXPECT_HAS(set_err({"optim.warmup_step=3"}),
             "unknown key `optim.warmup_step` in --set optim.warmup_step=3; did you mean "
             "`optim.warmup_steps`?");
  EXPECT_HAS(set_err({"dat.image_size=64"}),
             "unknown key `dat` in --set dat.image_size=64; did you mean `data`?");
  EXPECT_HAS(set_err({"data.augment.crop_scal=[0.5,1]"}),
             "unknown key `data.augment.crop_scal` in --set data.augment.crop_scal=[0.5,1]; did "
             "you mean `data.augment.crop_scale`?");
}

TEST(ConfigOverride, SectionOrLeafMisused) {
  EXPECT_HAS(set_err({"optim=3"}), "`optim` in --set optim=3 is a section, not a value");
  EXPECT_HAS(
      set_err({"optim.lr.x=1"}),
      "unknown key `optim.lr.x` in --set optim.lr.x=1: `optim.lr` is a value, not a section");
}

TEST(ConfigOverride, BadValueType) {
  EXPECT_HAS(set_err({"train.batch_size=3.5"}),
             "`train.batch_size` in --set train.batch_size=3.5: expected an integer, found `3.5`");
  EXPECT_HAS(set_err({"optim.betas=0.9"}),
             "`optim.betas` in --set optim.betas=0.9: expected a list of 2 numbers");
  EXPECT_HAS(set_err({"optim.lr=[1,2]"}),
             "`optim.lr` in --set optim.lr=[1,2]: expected a number, found a list of 2 items");
}

TEST(ConfigOverride, RangeErrorNamesTheOverride) {
  EXPECT_HAS(set_err({"optim.lr=-1e-4"}),
             "`optim.lr` in --set optim.lr=-1e-4: expected a number > 0, found -0.0001");
}

TEST(ConfigValidate, UnknownPresetsAreRefusedWithSuggestion) {
  // Before: `config check` said OK and `train` failed only after reading the data.
  EXPECT_HAS(set_err({"model.vision.preset=vit-tinyy"}),
             "`model.vision.preset` in --set model.vision.preset=vit-tinyy: expected one of "
             "ViT-B-16, ViT-L-14, ViT-S-8, vit-tiny, vit-micro, checkpoint, found `vit-tinyy`. "
             "HINT: did "
             "you mean `vit-tiny`?");
  EXPECT_HAS(err("model:\n  text:\n    preset: bert-tny\n"),
             "`model.text.preset` in x.yaml line 3: expected one of");
  EXPECT_HAS(err("model:\n  text:\n    preset: bert-tny\n"), "did you mean `bert-tiny`?");
  EXPECT_HAS(set_err({"model.vision.preset="}), "found ``");
  for (const auto& n : vision_preset_names())
    EXPECT_EQ(load("", {"model.vision.preset=" + n, "model.init.vision=v.pt"}).model.vision.preset,
              n);
  for (const auto& n : text_preset_names())
    EXPECT_EQ(load("", {"model.text.preset=" + n, "model.init.text=bert"}).model.text.preset, n);
  // The presets that read their sizes from pretrained files need those files named.
  EXPECT_HAS(set_err({"model.vision.preset=checkpoint"}), "`model.init.vision`");
  EXPECT_HAS(set_err({"model.vision.preset=checkpoint"}), "HINT: set model.init.vision");
  EXPECT_HAS(set_err({"model.text.preset=hf"}), "`model.init.text`");
}

TEST(ConfigOverride, PrecedenceDefaultsFileSet) {
  std::string yaml = "optim:\n  lr: 1e-3\n  eps: 1e-8\n";
  auto c = from(yaml);
  EXPECT_EQ(c.optim.lr, 1e-3);             // file beats default
  EXPECT_EQ(c.optim.weight_decay, 0.001);  // default where the file is silent
  c = from(yaml, {"optim.lr=2e-3", "optim.lr=5e-4"});
  EXPECT_EQ(c.optim.lr, 5e-4);  // --set beats the file, the last --set wins
  EXPECT_EQ(c.optim.eps, 1e-8);
  // An override can repair a bad file value before validation runs.
  EXPECT_EQ(from("optim:\n  lr: -1\n", {"optim.lr=1"}).optim.lr, 1.0);
}

// ------------------------------------------------------------- to_yaml, hash

TEST(ConfigYaml, EveryKeyInDeclarationOrder) {
  std::string y = to_yaml(Config{});
  EXPECT_HAS(y, "  lr: 3e-05\n");
  EXPECT_HAS(y, "  betas: [0.9, 0.98]\n");
  EXPECT_HAS(y,
             "  no_decay: [bias, LayerNorm, ln_, logit_scale, class_embedding, "
             "positional_embedding, position_embeddings, register_embedding, fc_norm, ls_1.gamma, "
             "ls_2.gamma]\n");
  EXPECT_HAS(y, "    crop_scale: [0.9, 1.0]\n");
  EXPECT_HAS(y, "  resume: \"\"\n");
  EXPECT_HAS(y, "  timeout_s: 600.0\n");
  size_t last = 0;
  for (const char* key : {"\nmodel:\n",       "\n  vision:\n",      "\n    preset: ViT-B-16\n",
                          "\n    mlp_ratio:", "\n  text:\n",        "\n  embed_dim:",
                          "\n  init:\n",      "\ndata:\n",          "\n  tokenizer:\n",
                          "\n  augment:\n",   "\n  drop_last:",     "\nloss:\n",
                          "\noptim:\n",       "\n  accum_steps:",   "\ntrain:\n",
                          "\n  freeze:\n",    "\n  deterministic:", "\ncheckpoint:\n",
                          "\nlog:\n",         "\ndist:\n",          "\n  bucket_mb:"}) {
    size_t at = y.find(key);
    ASSERT_NE(at, std::string::npos) << key;
    EXPECT_GT(at, last) << key << " out of order";
    last = at;
  }
}

TEST(ConfigYaml, RoundTripDefaults) {
  Config c;
  std::string y = to_yaml(c);
  Config back = load_string(y, "resolved.yaml");
  EXPECT_EQ(to_yaml(back), y);
  EXPECT_EQ(back.model.logit_scale_init, c.model.logit_scale_init);
  EXPECT_EQ(back.data.std, c.data.std);
}

TEST(ConfigYaml, RoundTripAwkwardValues) {
  Config c;
  c.data.train = "data/\xe7\x9c\xbc\xe5\xba\x95 set/train.csv";  // non-ASCII and a space
  c.data.val = "yes";                                            // would read as a bool
  c.checkpoint.resume = "3";                                     // would read as a number
  c.log.dir = "runs/a: b # c \"q\" \\ \t end";
  c.optim.no_decay = {"bias", "a,b", "[x]", "true", "#c"};
  c.optim.lr = 1.0 / 3.0;
  c.model.logit_scale_init = -0.0;
  c.train.seed = 18446744073709551615ull;
  c.data.mean = {1e-300, 123456789.125, -2.5};
  std::string y = to_yaml(c);
  Config back = load_string(y, "resolved.yaml");
  EXPECT_EQ(to_yaml(back), y);
  EXPECT_EQ(back.data.train, c.data.train);
  EXPECT_EQ(back.data.val, "yes");
  EXPECT_EQ(back.checkpoint.resume, "3");
  EXPECT_EQ(back.log.dir, c.log.dir);
  EXPECT_EQ(back.optim.no_decay, c.optim.no_decay);
  EXPECT_EQ(back.optim.lr, c.optim.lr);
  EXPECT_EQ(back.train.seed, c.train.seed);
  EXPECT_EQ(back.data.mean, c.data.mean);
  EXPECT_EQ(hash(back), hash(c));
}

TEST(ConfigHash, StableAndSensitive) {
  std::string h = hash(Config{});
  EXPECT_EQ(h.size(), 16u);
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos) << h;
  EXPECT_EQ(hash(Config{}), h);
  EXPECT_EQ(hash(load("")), h);
  EXPECT_EQ(hash(load_string(to_yaml(Config{}), "r.yaml")), h);
  EXPECT_NE(hash(load("", {"optim.lr=3.1e-5"})), h);
  EXPECT_NE(hash(load("", {"data.augment.hflip=true"})), h);
}

// ------------------------------------------------------------- shipped configs

TEST(ConfigDiff, FullKeyPathsAndTypedValues) {
  Config a = from("model:\n  vision:\n    layers: 4\n  text:\n    layers: 4\n");
  // Only the text tower changes: the same leaf name in model.vision must not hide it
  // (a diff keyed by section and leaf name alone reported nothing here).
  Config b = from("model:\n  vision:\n    layers: 4\n  text:\n    layers: 6\n");
  auto d = diff(a, b);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].key, "model.text.layers");
  EXPECT_EQ(d[0].before, "4");
  EXPECT_EQ(d[0].after, "6");
  // And the other way round, with both presets changed and a typed double and list.
  Config c = from(
      "model:\n  vision:\n    layers: 2\n    preset: vit-micro\n  text:\n    layers: 4\n"
      "optim:\n  lr: 0.001\ndata:\n  mean: [0.5, 0.5, 0.5]\n");
  auto e = diff(a, c);
  std::vector<std::string> keys;
  for (const auto& ch : e) keys.push_back(ch.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"model.vision.preset", "model.vision.layers",
                                            "data.mean", "optim.lr"}));
  EXPECT_EQ(e.back().after, "0.001");
  EXPECT_TRUE(diff(a, a).empty());
}

TEST(ConfigShipped, RetClipReferenceSetsTheReferenceSwitches) {
  auto c = load(RETCLIP_SOURCE_DIR "/configs/ret-clip-reference.yaml");
  auto paper = load(RETCLIP_SOURCE_DIR "/configs/ret-clip-vitb16.yaml");
  EXPECT_TRUE(c.model.init.required);
  EXPECT_TRUE(paper.model.init.required);
  EXPECT_FALSE(c.loss.gather);
  EXPECT_EQ(c.loss.duplicates, "negative");
  EXPECT_EQ(c.train.precision, Precision::kFp16);
  EXPECT_TRUE(c.optim.no_decay.empty());
  EXPECT_TRUE(c.data.tokenizer.map_quotes);
  EXPECT_TRUE(c.data.augment.hflip);
  EXPECT_EQ(c.data.augment.crop_scale, (std::array<double, 2>{0.9, 1.0}));
  EXPECT_EQ(c.optim.lr, paper.optim.lr);
  EXPECT_EQ(c.train.batch_size, paper.train.batch_size);
  EXPECT_THROW(load("", {"loss.duplicates=sometimes"}), UsageError);
  EXPECT_EQ(load("", {"loss.duplicates=positive"}).loss.duplicates, "positive");
}

TEST(ConfigShipped, RetClipVitB16) {
  auto c = load(RETCLIP_SOURCE_DIR "/configs/ret-clip-vitb16.yaml");
  EXPECT_EQ(c.model.vision.preset, "ViT-B-16");
  EXPECT_EQ(c.model.text.preset, "RoBERTa-wwm-ext-base-chinese");
  EXPECT_EQ(c.model.embed_dim, 512);
  EXPECT_EQ(c.data.image_size, 224);
  EXPECT_EQ(c.data.context_length, 100);
  EXPECT_EQ(c.data.tokenizer.type, "wordpiece");
  EXPECT_FALSE(c.data.tokenizer.path.empty());
  EXPECT_EQ(c.train.batch_size, 256);
  EXPECT_EQ(c.optim.lr, 3e-5);
  EXPECT_EQ(c.optim.weight_decay, 0.001);
  EXPECT_EQ(c.optim.warmup_steps, 50);
  EXPECT_EQ(c.optim.schedule, "cosine");
  EXPECT_EQ(c.optim.betas, (std::array<double, 2>{0.9, 0.98}));
  EXPECT_EQ(c.optim.eps, 1e-6);
  EXPECT_EQ(c.train.precision, Precision::kBf16);
  EXPECT_EQ(c.train.device, "cuda");
}

TEST(ConfigShipped, TinyCpu) {
  auto c = load(RETCLIP_SOURCE_DIR "/configs/tiny-cpu.yaml");
  EXPECT_EQ(c.model.vision.preset, "vit-tiny");
  EXPECT_EQ(c.model.text.preset, "bert-tiny");
  EXPECT_EQ(c.model.embed_dim, 128);
  EXPECT_EQ(c.data.image_size, 64);
  EXPECT_EQ(c.data.context_length, 64);
  EXPECT_EQ(c.data.tokenizer.type, "sentencepiece");
  EXPECT_EQ(c.data.train, "runs/demo/data/train.csv");
  EXPECT_EQ(c.data.val, "runs/demo/data/val.csv");
  EXPECT_EQ(c.data.format, "auto");
  EXPECT_EQ(c.train.batch_size, 32);
  EXPECT_EQ(c.optim.lr, 5e-4);
  EXPECT_EQ(c.optim.weight_decay, 0.1);
  EXPECT_EQ(c.optim.warmup_steps, 20);
  EXPECT_EQ(c.train.steps, 2000);
  // From-scratch settings (see the file's header comment).
  EXPECT_NEAR(c.model.logit_scale_init, std::log(1 / 0.07), 1e-6);
  EXPECT_EQ(c.model.text.dropout, 0.0);
  EXPECT_EQ(c.train.precision, Precision::kFp32);
  EXPECT_EQ(c.train.device, "cpu");
  // The demo shrinks it further from the command line.
  EXPECT_EQ(load(RETCLIP_SOURCE_DIR "/configs/tiny-cpu.yaml", {"train.steps=5"}).train.steps, 5);
}

}  // namespace
