// Oracle tests: files written by Python (safetensors, torch.save, torch.jit, transformers,
// open_clip) are read by retclip and compared with the values Python recorded; files
// retclip writes are read back by the Python safetensors library
// (tests/python/io_make_fixtures.py). Skipped when python3 lacks the packages.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>

#include "retclip/io/state_dict.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using namespace retclip;
using namespace retclip::io;

namespace {

const std::string kScript = RETCLIP_SOURCE_DIR "/tests/python/io_make_fixtures.py";

class IoOracle : public ::testing::Test {
 protected:
  // Fixtures are made once per version of the script and shared by every test process
  // (ctest runs each case separately): <build>/io_oracle_fixtures_<crc of the script>.
  static void SetUpTestSuite() {
    const std::string crc = util::hex32(util::crc32(util::read_file(kScript)));
    dir_ = fs::path(RETCLIP_BINARY_DIR) / ("io_oracle_fixtures_" + crc);
    if (fs::exists(dir_ / "DONE")) return;
    if (std::system("python3 -c 'import torch, safetensors, transformers' >/dev/null 2>&1") != 0) {
      skip_ = "python3 lacks torch, safetensors or transformers";
      return;
    }
    fs::path tmp = dir_;
    tmp += ".tmp-" + std::to_string(::getpid());
    util::remove_tree(tmp);
    const std::string cmd = "python3 " + kScript + " make " + tmp.string() + " > " +
                            (tmp.string() + ".log") + " 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      failed_ = "fixture script failed; see " + tmp.string() + ".log";
      return;
    }
    util::write_file_atomic(tmp / "DONE", "ok");
    std::error_code ec;
    fs::rename(tmp, dir_, ec);  // another test process may have won the race: use its copy
    if (ec) util::remove_tree(tmp);
    fs::remove(tmp.string() + ".log", ec);
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(failed_.empty()) << failed_;
  }
  static fs::path dir_;
  static std::string skip_, failed_;
};
fs::path IoOracle::dir_;
std::string IoOracle::skip_;
std::string IoOracle::failed_;

// Every tensor of `want` is in `got` with the same dtype, shape and values (bitwise);
// the two hold the same names. Prints the largest difference seen.
void expect_same(const StateDict& got, const StateDict& want, const std::string& what) {
  std::set<std::string> got_names, want_names;
  for (const auto& p : got) got_names.insert(p.first);
  for (const auto& p : want) want_names.insert(p.first);
  EXPECT_EQ(got_names, want_names) << what;
  double max_diff = 0;
  for (const auto& [name, w] : want) {
    const at::Tensor* g = find_tensor(got, name);
    if (!g) continue;
    EXPECT_EQ(g->scalar_type(), w.scalar_type()) << what << ": " << name;
    ASSERT_EQ(g->sizes(), w.sizes()) << what << ": " << name;
    EXPECT_TRUE(at::equal(*g, w)) << what << ": " << name;
    if (w.numel() && w.is_floating_point())
      max_diff = std::max(max_diff, (g->to(at::kDouble) - w.to(at::kDouble)).abs().max().item<double>());
  }
  std::printf("%s: %zu tensors, max |diff| = %.3g\n", what.c_str(), want.size(), max_diff);
}

}  // namespace

TEST_F(IoOracle, PythonSafetensorsReadIdenticallyAndRewriteByteIdentical) {
  const fs::path py = dir_ / "py_dtypes.safetensors";
  SafetensorsFile f = read_safetensors(py);
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  auto expected = nlohmann::json::parse(util::read_file(dir_ / "py_dtypes_expected.json"));
  ASSERT_EQ(f.tensors.size(), expected.size());
  for (const auto& [name, t] : f.tensors) {
    ASSERT_TRUE(expected.contains(name)) << name;
    const auto& e = expected[name];
    EXPECT_EQ(safetensors_dtype_name(t.scalar_type()), e["dtype"].get<std::string>()) << name;
    EXPECT_EQ(t.sizes().vec(), e["shape"].get<std::vector<int64_t>>()) << name;
    std::string hex;
    const auto* p = static_cast<const unsigned char*>(t.data_ptr());
    for (int64_t i = 0; i < t.numel() * static_cast<int64_t>(t.element_size()); ++i) {
      static const char* digits = "0123456789abcdef";
      hex += digits[p[i] >> 4];
      hex += digits[p[i] & 15];
    }
    EXPECT_EQ(hex, e["hex"].get<std::string>()) << name;
  }
  // Our writer reproduces the Python library's file byte for byte.
  EXPECT_TRUE(serialize_safetensors(f.tensors, f.metadata) == util::read_file(py));
}

TEST_F(IoOracle, CppWrittenSafetensorsReadByPython) {
  SafetensorsFile f = read_safetensors(dir_ / "py_dtypes.safetensors");
  write_safetensors(dir_ / "cpp_dtypes.safetensors", f.tensors, {{"format", "pt"}, {"writer", "retclip"}});
  auto ar = at::arange(12, at::kFloat).reshape({3, 4});
  write_safetensors(dir_ / "cpp_generated.safetensors",
                    {{"arange_f32", ar.t().contiguous().t()},  // written from a strided view
                     {"arange_bf16", ar.to(at::kBFloat16)},
                     {"ones_bool", at::ones({2, 2}, at::kBool)},
                     {"minus_i64", -at::arange(5)}});
  const std::string cmd = "python3 " + kScript + " check " + dir_.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

TEST_F(IoOracle, TorchSaveZipPlainAndNestedWithDdpPrefix) {
  auto ref = read_safetensors(dir_ / "ref_small.safetensors").tensors;
  EXPECT_EQ(detect_weights_format(dir_ / "small_plain.pt"), WeightsFormat::kTorchZip);
  expect_same(load_weights(dir_ / "small_plain.pt"), ref, "torch.save(state_dict)");
  expect_same(load_weights(dir_ / "small_nested.pt"), ref,
              "torch.save({state_dict: module.*, optimizer, epoch})");
}

TEST_F(IoOracle, TorchZipSharedStorageViewsDtypesAndForeignObjects) {
  auto ref = read_safetensors(dir_ / "ref_views.safetensors").tensors;
  auto got = load_weights(dir_ / "views_nested.pt");
  expect_same(got, ref, "torch.save({model: views of one storage + dtypes, args, numpy scalar, set})");
  for (const auto& [name, t] : got) EXPECT_TRUE(t.is_contiguous()) << name;
}

TEST_F(IoOracle, TorchScriptArchivesGiveParametersAndBuffers) {
  auto ref = read_safetensors(dir_ / "ref_small.safetensors").tensors;
  EXPECT_EQ(detect_weights_format(dir_ / "small_scripted.pt"), WeightsFormat::kTorchScript);
  expect_same(load_weights(dir_ / "small_scripted.pt"), ref, "torch.jit.script(...).save");
  expect_same(load_weights(dir_ / "small_traced.pt"), ref, "torch.jit.trace(...).save");
}

TEST_F(IoOracle, HuggingFaceBertThroughMapHfBert) {
  auto ref = read_safetensors(dir_ / "ref_bert.safetensors").tensors;
  expect_same(map_hf_bert(load_weights(dir_ / "hf_bert_st")), ref, "BertModel model.safetensors");
  expect_same(map_hf_bert(load_weights(dir_ / "hf_bert_bin")), ref, "BertModel pytorch_model.bin");
  expect_same(map_hf_bert(load_weights(dir_ / "hf_mlm_st" / "model.safetensors")),
              read_safetensors(dir_ / "ref_mlm.safetensors").tensors, "BertForMaskedLM (bert. + cls.)");
}

TEST_F(IoOracle, BicubicResizeMatchesTorchInterpolate) {
  auto f = read_safetensors(dir_ / "pe_resize.safetensors").tensors;
  const at::Tensor pe = *find_tensor(f, "in");
  for (const char* key : {"g10_aa", "g10", "g4_aa", "g4"}) {
    const std::string k = key;
    const int64_t grid = k[1] == '1' ? 10 : 4;
    const bool aa = k.find("_aa") != std::string::npos;
    at::Tensor got = resize_positional_embedding(pe, grid, aa);
    const at::Tensor& want = *find_tensor(f, k);
    ASSERT_EQ(got.sizes(), want.sizes()) << k;
    const double diff = (got - want).abs().max().item<double>();
    std::printf("resize 7x7 -> %ldx%ld antialias=%d: max |diff| = %.3g\n", static_cast<long>(grid),
                static_cast<long>(grid), aa ? 1 : 0, diff);
    EXPECT_LE(diff, 1e-6) << k;
  }
}

TEST_F(IoOracle, OpenClipCheckpointThroughVisualMapWithResize) {
  if (!fs::exists(dir_ / "openclip_tiny.pt")) GTEST_SKIP() << "open_clip not installed";
  auto ref = read_safetensors(dir_ / "ref_openclip_visual_g6.safetensors").tensors;
  auto got = map_openai_clip_visual(load_weights(dir_ / "openclip_tiny.pt"), /*target_grid=*/6);
  std::set<std::string> gn, rn;
  for (auto& p : got) gn.insert(p.first);
  for (auto& p : ref) rn.insert(p.first);
  EXPECT_EQ(gn, rn);
  double max_diff = 0;
  for (const auto& [name, w] : ref) {
    const at::Tensor* g = find_tensor(got, name);
    ASSERT_NE(g, nullptr) << name;
    ASSERT_EQ(g->sizes(), w.sizes()) << name;
    max_diff = std::max(max_diff, (*g - w).abs().max().item<double>());
  }
  std::printf("OpenCLIP visual (%zu tensors, pos-embed 4x4 -> 6x6 vs open_clip.resize_pos_embed): "
              "max |diff| = %.3g\n", ref.size(), max_diff);
  EXPECT_LE(max_diff, 1e-6);
}
