// End-to-end tests of the `retclip` binary: `info`, `--help`, unknown subcommands and
// `config show|check`, asserting exit codes (0 ok, 2 usage/config error) and that
// errors arrive on stderr as one line naming the key.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace {

#define EXPECT_HAS(text, part) \
  EXPECT_NE((text).find(part), std::string::npos) << "text: " << (text) << "\nwanted: " << (part)

struct Result {
  int code = -1;
  std::string out, err;
};

fs::path tmp_dir() {
  fs::path d = fs::path(RETCLIP_BINARY_DIR) / "test_tmp" / "cli";
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path write_tmp(const std::string& name, const std::string& text) {
  fs::path p = tmp_dir() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

/// Runs `retclip <args>` (args are shell words) and captures exit code, stdout, stderr.
Result run(const std::string& args) {
  const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string tag = std::string(t->test_suite_name()) + "." + t->name();
  fs::path out = tmp_dir() / (tag + ".out"), err = tmp_dir() / (tag + ".err");
  std::string cmd = std::string("'") + RETCLIP_CLI_BINARY + "' " + args + " >'" + out.string() +
                    "' 2>'" + err.string() + "'";
  int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

/// run() with `env_words` (e.g. "-u X Y=1") given to env(1) first.
Result run_env(const std::string& env_words, const std::string& args) {
  const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string tag = std::string(t->test_suite_name()) + "." + t->name();
  fs::path out = tmp_dir() / (tag + ".out"), err = tmp_dir() / (tag + ".err");
  std::string cmd = "env " + env_words + " '" + RETCLIP_CLI_BINARY + "' " + args + " >'" +
                    out.string() + "' 2>'" + err.string() + "'";
  int status = std::system(cmd.c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

const std::string kTiny = RETCLIP_SOURCE_DIR "/configs/tiny-cpu.yaml";
const std::string kVitB = RETCLIP_SOURCE_DIR "/configs/ret-clip-vitb16.yaml";

TEST(Cli, InfoPrintsLibTorchVersion) {
  auto r = run("info");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "LibTorch       2.11.0");
}

TEST(Cli, HelpExitsZero) {
  auto r = run("--help");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "config");
  EXPECT_HAS(r.out, "info");
}

TEST(Cli, UnknownSubcommandExitsTwo) {
  auto r = run("frobnicate");
  EXPECT_EQ(r.code, 2) << r.out << r.err;
  EXPECT_HAS(r.err, "unknown command 'frobnicate'");
  EXPECT_HAS(r.err, "launch");
}

TEST(Cli, ConfigWithoutActionExitsTwo) {
  auto r = run("config");
  EXPECT_EQ(r.code, 2) << r.out << r.err;
}

TEST(CliConfig, ShowDefaults) {
  auto r = run("config show");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "\noptim:\n  lr: 3e-05\n");
  EXPECT_HAS(r.out, "  betas: [0.9, 0.98]\n");
  EXPECT_HAS(r.out, "    preset: ViT-B-16\n");
}

TEST(CliConfig, ShowFileWithOverrides) {
  auto r = run("config show --config '" + kTiny +
               "' --set train.steps=7 --set 'optim.betas=[0.9,0.999]'");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "    preset: vit-tiny\n");
  EXPECT_HAS(r.out, "  steps: 7\n");
  EXPECT_HAS(r.out, "  betas: [0.9, 0.999]\n");
  EXPECT_HAS(r.out, "  lr: 0.0005\n");
}

TEST(CliConfig, ShowOutputChecksAndReproducesItself) {
  auto first = run("config show --config '" + kTiny + "' --set data.workers=5");
  ASSERT_EQ(first.code, 0) << first.err;
  auto p = write_tmp("resolved.yaml", first.out);
  auto again = run("config show --config '" + p.string() + "'");
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, first.out);
}

TEST(CliConfig, CheckShippedConfigs) {
  for (const auto& path : {kTiny, kVitB}) {
    auto r = run("config check --config '" + path + "'");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "config OK: " + path + "\n");
    EXPECT_EQ(r.err, "");
  }
}

TEST(CliConfig, CheckUnknownKeyExitsTwo) {
  auto p = write_tmp("unknown.yaml", "optim:\n  lr: 1e-4\n  warmup_step: 10\n");
  auto r = run("config check --config '" + p.string() + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_HAS(r.err, "unknown key `optim.warmup_step` in " + p.string() +
                        " line 3; did you mean `optim.warmup_steps`?");
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(CliConfig, CheckBadValueExitsTwo) {
  auto p = write_tmp("bad-value.yaml", "train:\n  precision: fp8\n");
  auto r = run("config check --config '" + p.string() + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.err, "`train.precision` in " + p.string() +
                        " line 2: expected one of fp32, bf16, "
                        "fp16, found `fp8`");
}

TEST(CliConfig, CheckBadOverrideExitsTwo) {
  auto r = run("config check --config '" + kTiny + "' --set train.batch_size=3.5");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.err, "`train.batch_size` in --set train.batch_size=3.5: expected an integer");
  r = run("config check --set foo");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.err, "bad override `--set foo`");
}

TEST(CliConfig, CheckMissingFileExitsTwo) {
  auto r = run("config check --config /nonexistent/run.yaml");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.err, "config file `/nonexistent/run.yaml` not found");
}

}  // namespace

TEST(CliInfo, OpenMpThreadsSleepWhenIdleUnlessTheUserSaysOtherwise) {
  // Before: libgomp's default (300000 spin rounds per barrier), whose spinning threads
  // made training 3-10x slower when another process was busy on one core.
  Result r = run_env("-u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u RETCLIP_OPENMP_DEFAULTS", "info");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "OpenMP wait    OMP_WAIT_POLICY=PASSIVE (retclip default)");
  r = run_env("-u GOMP_SPINCOUNT -u RETCLIP_OPENMP_DEFAULTS OMP_WAIT_POLICY=active", "info");
  EXPECT_HAS(r.out, "OpenMP wait    OMP_WAIT_POLICY=active (environment)");
}

TEST(CliConfig, CheckUnknownPresetExitsTwoWithSuggestion) {
  // Before: `config OK`, and `train` failed only after creating the run and reading data.
  Result r = run("config check --set model.vision.preset=vit-tinyy");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.err, "`model.vision.preset` in --set model.vision.preset=vit-tinyy: expected one of");
  EXPECT_HAS(r.err, "did you mean `vit-tiny`?");
}

TEST(CliConfig, CheckSecondYamlDocumentExitsTwoNamingTheLine) {
  fs::path p = write_tmp("two-docs.yaml", "train:\n  steps: 5\n---\noptim:\n  lr: 1e-4\n");
  Result r = run("config check --config '" + p.string() + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.err, p.string() + " line 3: a second YAML document starts here");
}

TEST(CliLaunch, WithoutDoubleDashHintsWhereTheCommandGoes) {
  // Before: CLI11's "The following arguments were not expected" and nothing else.
  Result r = run("launch --nproc 2 train --config '" + kTiny + "'");
  EXPECT_EQ(r.code, 2);
  EXPECT_HAS(r.err, "HINT: put the command the ranks run after `--`");
}

TEST(CliHelp, ResumeNamesEveryMode) {
  for (const std::string cmd : {"train", "finetune"}) {
    Result r = run(cmd + " --help");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_HAS(r.out, "auto-or-scratch");
    EXPECT_HAS(r.out, "--overwrite");
  }
}
