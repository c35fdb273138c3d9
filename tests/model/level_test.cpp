// Tests of the Level type: names round-trip, PerLevel indexing, and the error for an
// unknown name.
#include <gtest/gtest.h>

#include "retclip/model/level.hpp"
#include "retclip/util/error.hpp"

using namespace retclip;

TEST(Level, NamesRoundTrip) {
  std::vector<std::string> names;
  for (model::Level l : model::kLevels) {
    names.push_back(model::level_name(l));
    EXPECT_EQ(model::parse_level(model::level_name(l), "--level"), l);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"patient", "left", "right"}));
}

TEST(Level, PerLevelIsIndexedByLevel) {
  model::PerLevel<int> v;
  v[model::Level::kLeft] = 7;
  EXPECT_EQ(v[model::Level::kPatient], 0);
  EXPECT_EQ(v[model::Level::kLeft], 7);
  EXPECT_EQ(v.values[1], 7);
}

TEST(Level, UnknownNameNamesTheKey) {
  try {
    model::parse_level("both", "eval.level");
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(
        std::string(e.what()).find("eval.level: expected patient, left or right but got 'both'"),
        std::string::npos)
        << e.what();
  }
}
