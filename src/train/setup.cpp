// The seeded, initialised and partly frozen model of a run (see setup.hpp).
#include "retclip/train/setup.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "retclip/data/bad_samples.hpp"
#include "retclip/dist/comm.hpp"
#include "retclip/io/checkpoint_store.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/step.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/system.hpp"
#include "retclip/version.hpp"

namespace retclip::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
void freeze_prefix(torch::nn::Module& m, const std::string& prefix) {
  for (auto& p : m.named_parameters())
    if (p.key().rfind(prefix, 0) == 0) p.value().set_requires_grad(false);
}
}  // namespace

void freeze_vision_blocks(torch::nn::Module& m, int64_t blocks) {
  if (blocks <= 0) return;
  for (const char* k : {"visual.conv1", "visual.class_embedding", "visual.register_embedding",
                        "visual.positional_embedding", "visual.ln_pre"})
    freeze_prefix(m, k);
  for (int64_t i = 0; i < blocks; ++i)
    freeze_prefix(m, fmt::format("visual.transformer.resblocks.{}.", i));
}

void apply_freeze(model::RetClip& net, const config::FreezeConfig& f) {
  auto freeze = [&](const std::string& prefix) { freeze_prefix(*net, prefix); };
  if (f.vision) freeze("visual.");
  if (f.text) freeze("bert.");
  freeze_vision_blocks(*net, f.vision_blocks);
  if (f.text_blocks > 0) {
    freeze("bert.embeddings.");
    for (int64_t i = 0; i < f.text_blocks; ++i) freeze(fmt::format("bert.encoder.layer.{}.", i));
  }
}

namespace {

// A partial load is worth the user's attention: missing or mis-shaped tensors stay at
// their random initialisation.
void report_load(const char* key, const io::LoadReport& rep) {
  if (rep.ok())
    log::info("{}: {}", key, rep.to_string());
  else
    log::warn("{}: {}", key, rep.to_string());
}

}  // namespace

void check_init_given(const config::InitConfig& init) {
  RETCLIP_CHECK_USAGE(
      !init.required || !init.vision.empty() || !init.text.empty() || !init.full.empty(),
      "model.init.required is true but model.init.vision, model.init.text and "
      "model.init.full are all empty: the towers would train from random "
      "weights. HINT: set model.init.vision (CLIP ViT weights) and "
      "model.init.text (BERT / RoBERTa weights), or model.init.full; or "
      "model.init.vision=none to train from random weights on purpose");
}

void init_from_pretrained(model::RetClip& net, const config::InitConfig& init) {
  check_init_given(init);
  const auto& vo = net->options().vision();
  // load_pretrained names the config key and the file in every error it raises.
  if (!init.full.empty()) {
    auto rep = io::load_pretrained(*net, init.full, io::Pretrained::kFull, "model.init.full");
    log::info("model.init.full: {} tensors from {}", rep.loaded.size(), init.full);
  }
  if (!init.vision.empty() && init.vision != "none") {
    auto rep = io::load_pretrained(*net, init.vision, io::Pretrained::kVision, "model.init.vision",
                                   vo.image_size() / vo.patch_size());
    report_load("model.init.vision", rep);
    // A whole CLIP checkpoint carries its learned temperature; the reference starts the
    // patient level's scale from it (the eye levels keep model.logit_scale_init).
    if (rep.logit_scale) {
      torch::NoGradGuard no_grad;
      net->logit_scale.fill_(*rep.logit_scale);
      log::info("model.init.vision: patient logit scale {:.4f} (x{:.2f}) from the checkpoint",
                net->logit_scale.item<double>(), std::exp(net->logit_scale.item<double>()));
    }
  }
  if (!init.text.empty())
    report_load("model.init.text",
                io::load_pretrained(*net, init.text, io::Pretrained::kText, "model.init.text"));
}

model::RetClip build_model(const config::Config& cfg, int64_t vocab, const at::Device& device,
                           int rank) {
  torch::manual_seed(cfg.train.seed);
  model::RetClip net(model::retclip_options(cfg.model, vocab, cfg.train.grad_checkpointing));
  init_from_pretrained(net, cfg.model.init);
  apply_freeze(net, cfg.train.freeze);
  net->to(device);
  net->train();
  if (rank > 0) torch::manual_seed(cfg.train.seed + static_cast<uint64_t>(rank));
  return net;
}

namespace {
log::Level parse_log_level(const std::string& s) {
  if (s == "debug") return log::Level::kDebug;
  if (s == "warn") return log::Level::kWarn;
  if (s == "error") return log::Level::kError;
  return log::Level::kInfo;
}

}  // namespace

void record_config(Run& run, const config::Config& cfg) {
  run.config_yaml = config::to_yaml(cfg);
  run.config_hash = config::hash(cfg);
  if (!run.primary()) return;
  util::write_file_atomic(run.dir / io::CheckpointLayout::kConfig, run.config_yaml);
  util::write_file_atomic(run.dir / "run.json", json{{"retclip_version", kVersion},
                                                     {"git_hash", kGitHash},
                                                     {"config_hash", run.config_hash},
                                                     {"device", run.device.str()},
                                                     {"threads", run.threads},
                                                     {"world_size", run.env.world}}
                                                    .dump(2));
}

NewRunDir::NewRunDir(const config::Config& cfg, int rank) {
  std::error_code ec;
  if (rank == 0 && !cfg.log.dir.empty() && !fs::exists(cfg.log.dir, ec)) dir_ = cfg.log.dir;
}

NewRunDir::~NewRunDir() {
  if (keep_ || dir_.empty()) return;
  // A pre-check that stopped the run lists the bad samples there, and its error names
  // the file: that directory stays.
  std::error_code ec;
  const fs::path bad = dir_ / data::kBadSamplesFile;
  if (fs::exists(bad, ec) && !data::read_bad_sample_log(bad.string()).empty()) return;
  util::remove_tree(dir_, ec);
}

fs::path checkpoint_dir(const config::Config& cfg) {
  return cfg.checkpoint.dir.empty() ? fs::path(cfg.log.dir) / "checkpoints"
                                    : fs::path(cfg.checkpoint.dir);
}

void claim_run_dir(const config::Config& cfg, const std::string& command, bool overwrite,
                   int rank) {
  if (!cfg.checkpoint.resume.empty()) return;
  const fs::path dir = cfg.log.dir, ckpts = checkpoint_dir(cfg);
  std::vector<fs::path> steps;
  int64_t newest = -1;
  std::error_code ec;
  if (fs::is_directory(ckpts, ec))
    for (const auto& e : fs::directory_iterator(ckpts, ec))
      if (auto step = io::CheckpointStore::parse_dir_name(e.path().filename().string())) {
        steps.push_back(e.path());
        newest = std::max(newest, *step);
      }
  const fs::path metrics = dir / "metrics.jsonl", events = dir / "tensorboard";
  if (steps.empty() && !fs::exists(metrics, ec)) return;
  const std::string what =
      newest >= 0 ? fmt::format("checkpoints up to step {} in {}", newest, ckpts.string())
                  : fmt::format("the metrics of an earlier run ({})", metrics.string());
  RETCLIP_CHECK_USAGE(overwrite, "log.dir ", dir.string(), " already holds a run (", what,
                      "); starting a new one there would mix the two. HINT: continue it with `",
                      command, " --resume auto`, start over with `", command,
                      " --overwrite` (removes its checkpoints and metrics), or set log.dir to "
                      "a new directory");
  if (rank != 0) return;
  log::warn("--overwrite: removing {} of the earlier run in {}", what, dir.string());
  for (const auto& p : steps) util::remove_tree(p);
  util::remove_tree(metrics);
  util::remove_tree(events);
}

Run open_run(const config::Config& cfg, const std::string& name, config::Precision precision) {
  Run run;
  run.env = dist::Env::from_environment();
  run.dir = cfg.log.dir;
  const int rank = run.env.rank;
  fs::create_directories(run.dir);
  // Rank 0 logs to the console and train.log, every other rank to its own file.
  const std::string log_file =
      run.primary() ? name + ".log" : fmt::format("{}.rank{}.log", name, rank);
  log::init({(run.dir / log_file).string(), rank, run.env.world, run.primary(),
             parse_log_level(cfg.log.level)});
  const int64_t threads = util::configure_threads(cfg.train.threads);
  util::tune_malloc_for_training();
  run.device = resolve_device(cfg.train.device, run.env.local_rank);  // GPU of the local rank
  if (run.env.distributed()) log::info("joining {}", run.env.describe());
  run.comm = dist::Comm::from_env(run.env, run.device, {cfg.dist.backend, cfg.dist.timeout_s});
  if (run.env.distributed())
    log::info("process group ready: {} ranks over {}", run.env.world, run.comm->backend_name());
  RETCLIP_CHECK_USAGE(
      precision == config::Precision::kAuto || precision == config::Precision::kFp32 ||
          run.device.is_cuda(),
      name, ".precision=", config::name(precision), " needs a CUDA device; on CPU use ", name,
      ".precision=fp32");
  if (cfg.train.deterministic) at::globalContext().setDeterministicAlgorithms(true, false);
  run.threads = threads;
  record_config(run, cfg);
  log::info("retclip {} (git {}) | run dir {} | device {} | {} threads", kVersion, kGitHash,
            run.dir.string(), run.device.str(), threads);
  return run;
}

}  // namespace retclip::train
