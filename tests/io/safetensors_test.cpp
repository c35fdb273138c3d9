// Unit tests of the safetensors reader/writer: round trips for every dtype,
// deterministic output, and rejection of each kind of malformed file.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

#include "retclip/io/safetensors.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::io;

namespace {

fs::path st_dir() {
  fs::path d = fs::temp_directory_path() / ("retclip_io_st_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

at::Tensor sample(at::ScalarType t, std::vector<int64_t> shape) {
  if (t == at::kBool) return at::randint(0, 2, shape).to(at::kBool);
  if (at::isFloatingType(t)) return at::randn(shape).to(t);
  return at::randint(-100, 100, shape).to(t == at::kByte ? at::kLong : t).abs().to(t);
}

// A file from a header string and `data` bytes of buffer.
std::string make_file(const std::string& header, size_t data, uint64_t claimed_len = UINT64_MAX) {
  uint64_t n = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + std::string(data, '\0');
}

// Expects parse_safetensors to throw a UsageError naming the file and containing `what`.
void expect_rejected(const std::string& bytes, const std::string& what) {
  try {
    parse_safetensors(bytes, "bad.safetensors");
    FAIL() << "accepted a malformed file; expected an error containing: " << what;
  } catch (const UsageError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "message: " << msg;
    EXPECT_NE(msg.find("HINT"), std::string::npos) << msg;
  }
}

const std::vector<at::ScalarType> kAllTypes = {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble,
                                               at::kLong,  at::kInt,  at::kShort,    at::kChar,
                                               at::kByte,  at::kBool};

}  // namespace

TEST(Safetensors, RoundTripEveryDtypeInMemoryAndOnDisk) {
  TensorList in;
  for (auto t : kAllTypes) in.emplace_back(std::string("t_") + c10::toString(t), sample(t, {3, 5}));
  in.emplace_back("scalar", at::tensor(2.5));
  in.emplace_back("empty", at::zeros({0, 4}));
  in.emplace_back("strided", at::randn({4, 6}).t());  // non-contiguous input
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"preset", "ViT-S-8"}};

  const fs::path path = st_dir() / "round.safetensors";
  write_safetensors(path, in, meta);
  for (int pass = 0; pass < 2; ++pass) {
    SafetensorsFile f = pass == 0 ? parse_safetensors(util::read_file(path), path.string())
                                  : read_safetensors(path);
    EXPECT_EQ(f.metadata, meta);
    ASSERT_EQ(f.tensors.size(), in.size());
    for (const auto& [name, t] : in) {
      auto it = std::find_if(f.tensors.begin(), f.tensors.end(), [&](auto& p) { return p.first == name; });
      ASSERT_NE(it, f.tensors.end()) << name;
      EXPECT_EQ(it->second.scalar_type(), t.scalar_type()) << name;
      EXPECT_EQ(it->second.sizes(), t.sizes()) << name;
      EXPECT_TRUE(it->second.is_contiguous());
      EXPECT_TRUE(at::equal(it->second, t)) << name;
    }
  }
  auto entries = inspect_safetensors(path);
  EXPECT_EQ(entries.size(), in.size());
  for (size_t i = 1; i < entries.size(); ++i) EXPECT_EQ(entries[i].begin, entries[i - 1].end);
}

TEST(Safetensors, WriterIsDeterministicSortedAndAligned) {
  auto a = at::randn({2, 2});
  auto b = at::arange(4);
  auto c = at::ones({3}, at::kHalf);
  std::string s1 = serialize_safetensors({{"z", a}, {"b", b}, {"a", c}, {"y", a.clone()}});
  std::string s2 = serialize_safetensors({{"a", c}, {"y", a.clone()}, {"b", b}, {"z", a}});
  EXPECT_EQ(s1, s2);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(s1[i]);
  EXPECT_EQ(n % 8, 0u);
  std::string header = s1.substr(8, n);
  // I64 before F32 before F16 (descending dtype rank), then by name.
  EXPECT_LT(header.find("\"b\""), header.find("\"y\""));
  EXPECT_LT(header.find("\"y\""), header.find("\"z\""));
  EXPECT_LT(header.find("\"z\""), header.find("\"a\""));
  EXPECT_EQ(header.substr(0, 6), "{\"b\":{");
  EXPECT_EQ(header.find_last_not_of(' ') + 1, header.find_last_of('}') + 1);
}

TEST(Safetensors, WriterRejectsDuplicatesAndUnsupportedDtypes) {
  EXPECT_THROW(serialize_safetensors({{"a", at::ones({1})}, {"a", at::ones({1})}}), UsageError);
  EXPECT_THROW(serialize_safetensors({{"c", at::ones({1}, at::kComplexFloat)}}), UsageError);
  EXPECT_THROW(serialize_safetensors({{"u", at::Tensor()}}), UsageError);
}

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";
  // Control: the well-formed file parses.
  EXPECT_EQ(parse_safetensors(make_file("{" + ok_entry + "}", 24), "x").tensors.size(), 1u);

  expect_rejected(std::string("\x05\x00\x00", 3), "shorter than the 8-byte");
  expect_rejected(make_file("{}", 0, 1ull << 40), "exceeds the limit");
  expect_rejected(make_file("{" + ok_entry + "}", 24, 5000), "runs past the end of the file");
  expect_rejected(make_file("{\"a\": [1, 2", 0), "not valid JSON");
  expect_rejected(make_file("[1, 2]", 0), "does not start with '{'");
  expect_rejected(make_file(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2),
                  "unknown dtype 'F8_E4M3'");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
                  "needs 24 bytes");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
                  "end before they begin");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            12),
                  "overlapping");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                            20),
                  "gap");
  expect_rejected(make_file("{" + ok_entry + "}", 23), "data buffer holds 23");  // truncated
  expect_rejected(make_file("{" + ok_entry + "}", 30), "data buffer holds 30");  // trailing junk
  expect_rejected(make_file("{" + ok_entry + "," + ok_entry + "}", 24), "appears twice");
  expect_rejected(make_file(R"({"__metadata__":{"k":3}})", 0), "not a string");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
                  "non-negative");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                            8),
                  "overflows");
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "data_offsets");
}

TEST(Safetensors, JsonErrorsGivePositionNotParserTextOrRawBytes) {
  // Before: the message ended in nlohmann's "[json.exception.parse_error.101] ... last
  // read: '...'", quoting the header's raw bytes.
  const std::string header = "{\"a\":{\"dtype\":\"F32\",\x01SECRETBYTES}";
  try {
    parse_safetensors(make_file(header, 0), "bad.safetensors");
    FAIL() << "accepted invalid JSON";
  } catch (const UsageError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors: not a valid safetensors file: the " +
                       std::to_string(header.size()) + "-byte header is not valid JSON (error at byte "),
              std::string::npos)
        << msg;
    EXPECT_EQ(msg.find("SECRET"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("json.exception"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("last read"), std::string::npos) << msg;
  }
  // The header-length hint names no C++ function.
  try {
    parse_safetensors(make_file("{}", 0, 1ull << 40), "bad.safetensors");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()).find("()"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, TruncationsAndBitFlipsNeverCrash) {
  std::string good = serialize_safetensors({{"w", at::randn({4, 4})}, {"i", at::arange(6)}}, {{"k", "v"}});
  size_t accepted = 0, rejected = 0;
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      parse_safetensors(std::string_view(good).substr(0, n), "cut");
      ++accepted;
    } catch (const UsageError&) {
      ++rejected;
    }
  }
  EXPECT_EQ(accepted, 0u);  // every strict prefix is incomplete
  EXPECT_EQ(rejected, good.size());
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string bad = good;
    size_t pos = rng() % std::min<size_t>(bad.size(), 160);  // header region
    bad[pos] = static_cast<char>(bad[pos] ^ (1 << (rng() % 8)));
    try {
      parse_safetensors(bad, "flip");
    } catch (const UsageError&) {
    }
  }
}
