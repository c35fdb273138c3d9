// util::starts_with / ends_with at the edges: empty strings, equal strings, longer affixes.
#include <gtest/gtest.h>

#include "retclip/util/strings.hpp"

namespace retclip::util {
namespace {

TEST(Strings, StartsWith) {
  EXPECT_TRUE(starts_with("visual.proj", "visual."));
  EXPECT_TRUE(starts_with("abc", "abc"));
  EXPECT_TRUE(starts_with("abc", ""));
  EXPECT_TRUE(starts_with("", ""));
  EXPECT_FALSE(starts_with("ab", "abc"));
  EXPECT_FALSE(starts_with("xabc", "abc"));
  EXPECT_FALSE(starts_with("", "a"));
}

TEST(Strings, EndsWith) {
  EXPECT_TRUE(ends_with("train_texts.jsonl", "_texts.jsonl"));
  EXPECT_TRUE(ends_with("abc", "abc"));
  EXPECT_TRUE(ends_with("abc", ""));
  EXPECT_FALSE(ends_with("bc", "abc"));
  EXPECT_FALSE(ends_with("abcx", "abc"));
  EXPECT_FALSE(ends_with("", "a"));
}

}  // namespace
}  // namespace retclip::util
