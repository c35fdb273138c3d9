// Tests of the base64 codec: round trips in both alphabets, padding, strict errors.
#include <gtest/gtest.h>

#include <string>

#include "retclip/data/base64.hpp"
#include "retclip/util/error.hpp"

using namespace retclip::data;
using retclip::UsageError;

namespace {
bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}
}  // namespace

TEST(Base64, RoundTripsBothAlphabets) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  for (size_t n : {0, 1, 2, 3, 4, 5, 255, 256}) {
    std::string b = bytes.substr(0, n);
    for (bool url : {false, true})
      for (bool pad : {false, true}) {
        std::string enc = base64_encode(b, url, pad);
        EXPECT_EQ(base64_decode(enc), b) << n << url << pad;
        if (url) {
          EXPECT_EQ(enc.find_first_of("+/"), std::string::npos);
        }
      }
  }
  EXPECT_EQ(base64_encode("\xfb\xff", false), "+/8=");
  EXPECT_EQ(base64_encode("\xfb\xff", true), "-_8=");
  EXPECT_EQ(base64_encode("\xfb\xff", true, false), "-_8");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_decode("Zm9vYg"), "foob");
}

TEST(Base64, StrictErrors) {
  std::string out, err;
  EXPECT_FALSE(base64_try_decode("Zm9v!mFy", &out, &err));
  EXPECT_TRUE(has(err, "'!' at character 4")) << err;
  EXPECT_FALSE(base64_try_decode("Zm=vYmFy", &out, &err));
  EXPECT_TRUE(has(err, "padding in the middle")) << err;
  EXPECT_FALSE(base64_try_decode("Zm9vY", &out, &err));
  EXPECT_TRUE(has(err, "cut short")) << err;
  EXPECT_FALSE(base64_try_decode("+_8=", &out, &err));
  EXPECT_TRUE(has(err, "mixes")) << err;
  EXPECT_FALSE(base64_try_decode("Zm9=", &out, &err));  // trailing bits not zero
  EXPECT_FALSE(base64_try_decode("Zg===", &out, &err));
  EXPECT_THROW(base64_decode("a b="), UsageError);
}
