// The config's enums: every name reads back as its value, unknown names are refused with
// the names allowed and the closest one, and config::load / --set / to_yaml use the names.
#include "retclip/config/enums.hpp"

#include <gtest/gtest.h>

#include <functional>

#include "retclip/config/config.hpp"
#include "retclip/util/error.hpp"

namespace retclip::config {
namespace {

std::string usage_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(no UsageError)";
}

template <class E>
void expect_round_trip(size_t count) {
  const auto all = names<E>();
  ASSERT_EQ(all.size(), count);
  for (const auto& n : all) {
    const E e = parse<E>(n, "key");
    EXPECT_EQ(name(e), n);
  }
}

TEST(ConfigEnums, EveryNameReadsBackAsItsValue) {
  expect_round_trip<Precision>(4);
  expect_round_trip<BadSamplePolicy>(2);
  expect_round_trip<Preprocess>(2);
  expect_round_trip<Level>(3);
  expect_round_trip<Feature>(2);
  EXPECT_EQ(parse<Precision>("bf16", "k"), Precision::kBf16);
  EXPECT_EQ(parse<Preprocess>("resize", "k"), Preprocess::kResize);
  EXPECT_EQ(parse<Level>("patient", "k"), Level::kPatient);
  EXPECT_EQ(parse<Feature>("pre_proj", "k"), Feature::kPreProj);
  EXPECT_EQ(parse<BadSamplePolicy>("fail", "k"), BadSamplePolicy::kFail);
}

TEST(ConfigEnums, UnknownNameListsTheNamesAndTheClosest) {
  const std::string msg = usage_error([] { parse<Preprocess>("fundus-crop", "--preprocess"); });
  EXPECT_EQ(msg,
            "--preprocess: expected one of fundus_crop, resize, found `fundus-crop`. HINT: did "
            "you mean `fundus_crop`?");
  // Names are exact: upper case is another name.
  EXPECT_NE(usage_error([] { parse<BadSamplePolicy>("FAIL", "--on-bad-sample"); })
                .find("expected one of skip, fail, found `FAIL`"),
            std::string::npos);
}

TEST(ConfigEnums, FreezeForms) {
  EXPECT_EQ(parse_freeze("none", "k"), (Freeze{Freeze::Kind::kNone, 0}));
  EXPECT_EQ(parse_freeze("head-only", "k"), (Freeze{Freeze::Kind::kHeadOnly, 0}));
  EXPECT_EQ(parse_freeze("first-4-blocks", "k"), (Freeze{Freeze::Kind::kFirstBlocks, 4}));
  EXPECT_EQ(name(Freeze{Freeze::Kind::kFirstBlocks, 12}), "first-12-blocks");
  for (const char* bad : {"first-0-blocks", "first--1-blocks", "first-+2-blocks", "first-x-blocks",
                          "last-2-blocks", "first-2-block", "first--blocks", "all"}) {
    Freeze f;
    EXPECT_FALSE(from_name(bad, f)) << bad;
  }
  EXPECT_NE(usage_error([] { parse_freeze("last-2-blocks", "finetune.freeze"); })
                .find("finetune.freeze: expected none, head-only or first-N-blocks (N >= 1), "
                      "found `last-2-blocks`. HINT: e.g. finetune.freeze=first-4-blocks"),
            std::string::npos);
}

TEST(ConfigEnums, LoadTakesNamesAndToYamlWritesThem) {
  const Config c = load_string(
      "train:\n  precision: bf16\ndata:\n  preprocess: \"resize\"\n  on_bad_sample: fail\n"
      "eval:\n  probe:\n    level: eye\n    feature: pre_proj\nfinetune:\n  freeze: first-3-blocks\n"
      "  precision: auto\n  level: patient\n",
      "x.yaml");
  EXPECT_EQ(c.train.precision, Precision::kBf16);
  EXPECT_EQ(c.data.preprocess, Preprocess::kResize);
  EXPECT_EQ(c.data.on_bad_sample, BadSamplePolicy::kFail);
  EXPECT_EQ(c.eval.probe.level, Level::kEye);
  EXPECT_EQ(c.eval.probe.feature, Feature::kPreProj);
  EXPECT_EQ(c.finetune.freeze, (Freeze{Freeze::Kind::kFirstBlocks, 3}));
  EXPECT_EQ(c.finetune.level, Level::kPatient);
  const std::string y = to_yaml(c);
  for (const char* line : {"  precision: bf16\n", "  preprocess: resize\n", "  on_bad_sample: fail\n",
                           "    level: eye\n", "    feature: pre_proj\n", "  freeze: first-3-blocks\n",
                           "  precision: auto\n", "  level: patient\n"})
    EXPECT_NE(y.find(line), std::string::npos) << line;
  // What to_yaml writes loads back as the same config.
  EXPECT_EQ(to_yaml(load_string(y, "round trip")), y);
}

TEST(ConfigEnums, ErrorsNameTheKeyAndWhereTheValueCameFrom) {
  EXPECT_EQ(usage_error([] { load_string("finetune:\n  level: eyes\n", "x.yaml"); }),
            "`finetune.level` in x.yaml line 2: expected one of auto, eye, patient, found `eyes`. "
            "HINT: did you mean `eye`?");
  // train.precision takes no auto (pretraining names its precision); finetune's does.
  EXPECT_EQ(usage_error([] { load_string("train:\n  steps: 1\n", "x.yaml", {"train.precision=auto"}); }),
            "`train.precision` in --set train.precision=auto: expected one of fp32, bf16, fp16, "
            "found `auto`");
  EXPECT_EQ(usage_error([] { load_string("finetune:\n  freeze: [1, 2]\n", "x.yaml"); })
                .find("`finetune.freeze` in x.yaml line 2: expected one of none, head-only, "
                      "first-N-blocks, found a list of 2 items"),
            0u);
  EXPECT_NE(usage_error([] { load_string("train:\n  steps: 1\n", "x.yaml", {"finetune.freeze=first-0-blocks"}); })
                .find("expected one of none, head-only, first-N-blocks, found `first-0-blocks`"),
            std::string::npos);
}

}  // namespace
}  // namespace retclip::config
