// The pretraining loop (see trainer.hpp). Sections: signals, run directory, data,
// model, checkpoint state, the loop.
#include "retclip/train/trainer.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "retclip/dist/comm.hpp"
#include "retclip/dist/env.hpp"
#include "retclip/dist/grad_sync.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/checkpoint.hpp"
#include "retclip/train/data_stream.hpp"
#include "retclip/train/metrics.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/schedule.hpp"
#include "retclip/train/step.hpp"
#include "retclip/train/tensorboard.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"
#include "retclip/util/system.hpp"
#include "retclip/version.hpp"

namespace retclip::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- signals ---------------------------------------------------------------------

namespace {
std::atomic<int> g_stop_signals{0};

void on_stop_signal(int) {
  if (g_stop_signals.fetch_add(1) >= 1) _exit(130);  // second signal: leave at once
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() { return g_stop_signals.load() > 0; }

namespace {

// ---- run directory ---------------------------------------------------------------

log::Level parse_level(const std::string& s) {
  if (s == "debug") return log::Level::kDebug;
  if (s == "warn") return log::Level::kWarn;
  if (s == "error") return log::Level::kError;
  return log::Level::kInfo;
}

std::string format_bytes(int64_t b) {
  return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0));
}

// Lines of the resolved config that differ between a checkpoint and this run, except
// keys that never change the numbers (logging, checkpoint policy, run length).
std::vector<std::string> config_changes(const std::string& before, const std::string& now) {
  auto to_map = [](const std::string& yaml) {
    std::map<std::string, std::string> m;
    std::istringstream in(yaml);
    std::string line, section;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      size_t indent = line.find_first_not_of(' ');
      std::string body = line.substr(indent);
      size_t colon = body.find(':');
      if (colon == std::string::npos) continue;
      std::string key = body.substr(0, colon), value = body.substr(colon + 1);
      if (indent == 0) section = key;
      m[section + "/" + std::to_string(indent) + "/" + key] = value;
    }
    return m;
  };
  auto a = to_map(before), b = to_map(now);
  std::vector<std::string> out;
  for (const auto& [k, v] : b) {
    if (k.rfind("log/", 0) == 0 || k.rfind("checkpoint/", 0) == 0) continue;
    if (k.find("/steps") != std::string::npos || k.find("/epochs") != std::string::npos) continue;
    auto it = a.find(k);
    if (it == a.end() || it->second != v) {
      std::string key = k.substr(0, k.find('/')) + "." + k.substr(k.rfind('/') + 1);
      out.push_back(fmt::format("{}:{} -> {}", key, it == a.end() ? " (absent)" : it->second, v));
    }
  }
  return out;
}

void apply_freeze(model::RetClip& net, const config::FreezeConfig& f) {
  auto freeze_prefix = [&](const std::string& prefix) {
    for (auto& p : net->named_parameters())
      if (p.key().rfind(prefix, 0) == 0) p.value().set_requires_grad(false);
  };
  if (f.vision) freeze_prefix("visual.");
  if (f.text) freeze_prefix("bert.");
  if (f.vision_blocks > 0) {
    for (const char* k : {"visual.conv1", "visual.class_embedding", "visual.positional_embedding",
                          "visual.ln_pre"})
      freeze_prefix(k);
    for (int64_t i = 0; i < f.vision_blocks; ++i)
      freeze_prefix(fmt::format("visual.transformer.resblocks.{}.", i));
  }
  if (f.text_blocks > 0) {
    freeze_prefix("bert.embeddings.");
    for (int64_t i = 0; i < f.text_blocks; ++i) freeze_prefix(fmt::format("bert.encoder.layer.{}.", i));
  }
}

void init_from_pretrained(model::RetClip& net, const config::InitConfig& init,
                          int64_t vision_grid) {
  if (!init.full.empty()) {
    auto sd = io::map_retclip(io::load_weights(init.full));
    auto rep = io::apply_state_dict(*net, sd, /*strict=*/true);
    log::info("model.init.full: {} tensors from {}", rep.loaded.size(), init.full);
  }
  if (!init.vision.empty()) {
    auto sd = io::map_openai_clip_visual(io::load_weights(init.vision), vision_grid);
    auto rep = io::apply_state_dict(*net, sd, /*strict=*/false, "visual.");
    log::info("model.init.vision: {}", rep.to_string());
  }
  if (!init.text.empty()) {
    auto sd = io::map_hf_bert(io::load_weights(init.text));
    auto rep = io::apply_state_dict(*net, sd, /*strict=*/false, "bert.");
    log::info("model.init.text: {}", rep.to_string());
  }
}

// ---- checkpoint state ------------------------------------------------------------

std::string tensor_bytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous().cpu();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

at::Tensor bytes_tensor(const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  std::memcpy(t.data_ptr(), s.data(), s.size());
  return t;
}

// A fault hook for the crash-safety tests: RETCLIP_FAULT_KILL_IN_CHECKPOINT=<step>
// kills the process with SIGKILL halfway through writing that step's checkpoint.
// RETCLIP_FAULT_KILL_AFTER_STEP=<step> kills it right after that optimizer step.
// RETCLIP_FAULT_RANK=<r> limits either to one rank of a distributed run.
void maybe_fault(const char* var, int64_t step) {
  const char* env = std::getenv(var);
  if (!env || std::stoll(env) != step) return;
  const char* only = std::getenv("RETCLIP_FAULT_RANK");
  const char* rank = std::getenv("RANK");
  if (only && *only && std::string(only) != (rank ? rank : "0")) return;
  ::kill(::getpid(), SIGKILL);
}

// Checkpoint file of a rank's random state: rng_cpu.bin for rank 0 (the single-process
// name), rng_cpu.rank<r>.bin for the others.
std::string rng_file(const char* kind, int rank) {
  return rank == 0 ? fmt::format("rng_{}.bin", kind) : fmt::format("rng_{}.rank{}.bin", kind, rank);
}

// Losses and accuracies averaged over ranks (all ranks then take the same decisions:
// skip a non-finite step, log the same numbers), and in the same all-reduce whether any
// rank wants to stop (signal or time budget): returns that.
bool reduce_losses(dist::Comm& comm, StepLosses& l, bool stop_here) {
  at::Tensor v = at::stack({l.total, l.patient, l.left, l.right}).to(at::kDouble).cpu();
  at::Tensor acc = at::tensor({l.acc_patient_i2t, l.acc_patient_t2i, l.acc_left_i2t,
                               l.acc_left_t2i, l.acc_right_i2t, l.acc_right_t2i,
                              stop_here ? 1.0 : 0.0},
                              at::kDouble);
  at::Tensor all = at::cat({v, acc}).to(l.total.device());
  comm.all_reduce_(all);
  all = (all / comm.world()).cpu();
  auto a = all.accessor<double, 1>();
  auto back = [&](int i) { return at::tensor(a[i], l.total.options()); };
  l.total = back(0);
  l.patient = back(1);
  l.left = back(2);
  l.right = back(3);
  l.acc_patient_i2t = a[4];
  l.acc_patient_t2i = a[5];
  l.acc_left_i2t = a[6];
  l.acc_left_t2i = a[7];
  l.acc_right_i2t = a[8];
  l.acc_right_t2i = a[9];
  return a[10] > 0;
}

struct LoopState {
  int64_t step = 0;             ///< optimizer steps done
  int64_t skipped = 0;          ///< non-finite steps skipped in total
  int64_t consecutive_skips = 0;
  double loss_scale = 65536.0;  ///< fp16 only
  int64_t good_since_growth = 0;
};

}  // namespace

namespace {
TrainSummary run_training_impl(const config::Config& cfg, const TrainOptions& options) {
  const auto t_start = std::chrono::steady_clock::now();
  // -- run directory, logging, threads, device
  const dist::Env env = dist::Env::from_environment();
  const int rank = env.rank, world = env.world;
  const bool primary = rank == 0;
  const fs::path run_dir = cfg.log.dir;
  fs::create_directories(run_dir);
  // Rank 0 logs to the console and train.log, every other rank to its own file.
  log::init({(run_dir / (primary ? std::string("train.log") : fmt::format("train.rank{}.log", rank)))
                 .string(),
             rank, world, primary, parse_level(cfg.log.level)});
  const int64_t threads = util::configure_threads(cfg.train.threads);
  // CUDA ranks use the GPU of their local rank, as torchrun users expect.
  const at::Device device = resolve_device(cfg.train.device, env.local_rank);
  std::shared_ptr<dist::Comm> comm;
  if (env.distributed()) {
    log::info("joining {}", env.describe());
    comm = dist::Comm::init(env, device, {cfg.dist.backend, cfg.dist.timeout_s});
    log::info("process group ready: {} ranks over {}", world, comm->backend_name());
  }
  const Precision precision = parse_precision(cfg.train.precision);
  RETCLIP_CHECK_USAGE(precision == Precision::kFp32 || device.is_cuda(),
                      "train.precision=", cfg.train.precision,
                      " needs a CUDA device; on CPU use train.precision=fp32");
  if (cfg.train.deterministic) at::globalContext().setDeterministicAlgorithms(true, false);
  const std::string resolved = config::to_yaml(cfg);
  const std::string cfg_hash = config::hash(cfg);
  if (primary) {
    util::write_file_atomic(run_dir / "config.yaml", resolved);
    util::write_file_atomic(
        run_dir / "run.json",
        json{{"retclip_version", kVersion}, {"git_hash", kGitHash}, {"config_hash", cfg_hash},
             {"device", device.str()}, {"threads", threads}, {"world_size", world}}
            .dump(2));
  }
  log::info("retclip {} (git {}) | run dir {} | device {} | {} threads", kVersion, kGitHash,
            run_dir.string(), device.str(), threads);

  // -- data
  TrainData data = TrainData::open(cfg, rank, world);
  log::info("{}", data.describe());

  // -- model
  torch::manual_seed(cfg.train.seed);
  model::RetClip net(model::retclip_options(cfg.model, data.vocab_size(), cfg.train.grad_checkpointing));
  init_from_pretrained(net, cfg.model.init,
                       net->options().vision().image_size() / net->options().vision().patch_size());
  apply_freeze(net, cfg.train.freeze);
  net->to(device);
  net->train();
  // Every rank builds the same initial weights from the seed; from here on each rank
  // draws its own dropout masks.
  if (rank > 0) torch::manual_seed(cfg.train.seed + static_cast<uint64_t>(rank));
  int64_t n_params = 0;
  for (const auto& p : net->parameters()) n_params += p.numel();
  log::info("model: vision {} + text {}, embed {}, {:.2f}M parameters", cfg.model.vision.preset,
            cfg.model.text.preset, net->options().embed_dim(), n_params / 1e6);

  BuiltOptimizer built = build_adamw(*net, cfg.optim);
  torch::optim::AdamW& opt = *built.optimizer;
  const std::vector<at::Tensor> params = optimizer_params(opt);
  log::info("{}", built.summary.to_string());

  const int64_t steps_per_epoch = data.steps_per_epoch();
  RETCLIP_CHECK_USAGE(steps_per_epoch > 0, "the training set (", data.size(),
                      " patients) does not fill one batch of ", cfg.train.batch_size,
                      " (train.batch_size). HINT: lower train.batch_size or add data");
  const int64_t total = cfg.train.steps > 0 ? cfg.train.steps : cfg.train.epochs * steps_per_epoch;

  const loss::TripartiteLossOptions loss_opts = loss_options(cfg, world);

  // -- checkpoints and resume
  const fs::path ckpt_dir = cfg.checkpoint.dir.empty() ? run_dir / "checkpoints" : fs::path(cfg.checkpoint.dir);
  CheckpointStore store(ckpt_dir, CheckpointStore::options_from(cfg.checkpoint, cfg_hash));
  LoopState st;
  if (auto ck = store.resolve(cfg.checkpoint.resume)) {
    const fs::path p = ck->path;
    auto report = io::apply_state_dict(*net, io::load_weights(p / "model.safetensors"), true);
    load_optimizer_state_file(opt, p / "optimizer.pt");
    json s = json::parse(util::read_file(p / "trainer.json"));
    st.step = s.at("step").get<int64_t>();
    st.skipped = s.at("skipped").get<int64_t>();
    st.consecutive_skips = s.at("consecutive_skips").get<int64_t>();
    st.loss_scale = s.at("loss_scale").get<double>();
    st.good_since_growth = s.at("good_since_growth").get<int64_t>();
    data.restore(s.at("data"));
    // Each rank's random state, when the checkpoint has one for this rank.
    const fs::path rng_cpu = p / rng_file("cpu", rank), rng_cuda = p / rng_file("cuda", rank);
    if (fs::exists(rng_cpu)) {
      at::Generator(at::detail::getDefaultCPUGenerator())
          .set_state(bytes_tensor(util::read_file(rng_cpu)));
    } else {
      torch::manual_seed(cfg.train.seed + 7919 * static_cast<uint64_t>(st.step) + rank);
      log::warn("checkpoint has no random state for rank {}: dropout reseeded", rank);
    }
    if (device.is_cuda() && fs::exists(rng_cuda))
      at::Generator(at::detail::getCUDAHooks().getDefaultGenerator(device.index()))
          .set_state(bytes_tensor(util::read_file(rng_cuda)));
    for (const auto& change : config_changes(util::read_file(p / "config.yaml"), resolved))
      log::warn("config differs from the checkpoint, resume is not exact: {}", change);
    if (s.value("world_size", 1) != world)
      log::warn("checkpoint was written with world size {}, resuming with {} at global sample {}",
                s.value("world_size", 1), world, s.at("data").dump());
    log::info("resumed from {} at step {}", p.string(), st.step);
  }

  // Data parallelism: rank 0's weights everywhere, gradients averaged over ranks.
  std::unique_ptr<dist::GradSync> grad_sync;
  if (comm) {
    std::vector<at::Tensor> state;
    for (const auto& p : net->parameters()) state.push_back(p.data());
    for (const auto& b : net->buffers()) state.push_back(b);
    comm->broadcast_(state, 0);
    grad_sync = std::make_unique<dist::GradSync>(comm, net->parameters(), cfg.dist.bucket_mb);
    log::info("data parallel: {} ranks, {} gradient buckets of <= {:g} MB, global batch {}",
              world, grad_sync->bucket_count(), cfg.dist.bucket_mb, cfg.train.batch_size * world);
  }
  const StepComm step_comm{comm.get(), grad_sync.get()};

  MultiSink sinks;  // metrics from rank 0 only (after reduction over ranks)
  if (primary) {
    sinks.add(std::make_shared<JsonlSink>(run_dir / "metrics.jsonl", st.step));
    if (cfg.log.tensorboard) sinks.add(std::make_shared<TensorBoardSink>(run_dir / "tensorboard"));
  }

  // Rank 0 writes the shared state and every rank's random state (collected with an
  // all-gather, so other ranks need no write access); then all ranks meet at a barrier.
  auto save_checkpoint = [&](int64_t step) {
    std::vector<std::string> rng_cpu{tensor_bytes(at::detail::getDefaultCPUGenerator().get_state())};
    std::vector<std::string> rng_cuda;
    if (device.is_cuda())
      rng_cuda.push_back(
          tensor_bytes(at::detail::getCUDAHooks().getDefaultGenerator(device.index()).get_state()));
    if (comm) {
      auto gather_bytes = [&](const std::string& mine) {
        at::Tensor all = comm->all_gather(bytes_tensor(mine).to(device)).cpu();
        std::vector<std::string> out;
        for (const auto& part : all.chunk(world)) out.push_back(tensor_bytes(part));
        return out;
      };
      rng_cpu = gather_bytes(rng_cpu[0]);
      if (device.is_cuda()) rng_cuda = gather_bytes(rng_cuda[0]);
    }
    if (!primary) {
      comm->barrier();
      return store.dir().string();
    }
    std::vector<CheckpointFile> files;
    files.push_back(CheckpointFile::writer("model.safetensors", [&](const fs::path& path) {
      io::save_weights(path, io::module_state_dict(*net), {{"format", "retclip"}});
      maybe_fault("RETCLIP_FAULT_KILL_IN_CHECKPOINT", step);
    }));
    files.push_back(CheckpointFile::writer(
        "optimizer.pt", [&](const fs::path& path) { save_optimizer_state(opt, path); }));
    json s{{"step", step},
           {"skipped", st.skipped},
           {"consecutive_skips", st.consecutive_skips},
           {"loss_scale", st.loss_scale},
           {"good_since_growth", st.good_since_growth},
           {"world_size", world},
           {"config_hash", cfg_hash},
           {"data", data.state()}};
    files.push_back(CheckpointFile::bytes("trainer.json", s.dump(2)));
    for (size_t r = 0; r < rng_cpu.size(); ++r)
      files.push_back(CheckpointFile::bytes(rng_file("cpu", static_cast<int>(r)), rng_cpu[r]));
    for (size_t r = 0; r < rng_cuda.size(); ++r)
      files.push_back(CheckpointFile::bytes(rng_file("cuda", static_cast<int>(r)), rng_cuda[r]));
    files.push_back(CheckpointFile::bytes("config.yaml", resolved));
    fs::path p = store.save(step, files,
                            json{{"step", step}, {"epoch", step / steps_per_epoch}, {"world_size", world}});
    log::info("checkpoint {} written", p.string());
    if (comm) comm->barrier();
    return p.string();
  };

  int64_t last_val_step = -1;
  std::optional<EvalResult> last_val;
  auto run_validation = [&](int64_t step) -> std::optional<EvalResult> {
    if (!data.has_val() || !primary) return std::nullopt;  // rank 0 validates
    if (step == last_val_step) return last_val;  // weights unchanged since then
    EvalResult r = evaluate(net, data.val_source(device), data.val_size(), loss_opts, precision);
    log::info("validation at step {}: {}", step, r.to_string());
    sinks.write(step, r.metrics(), wall_time_s());
    last_val_step = step;
    last_val = r;
    return r;
  };

  // -- the loop
  install_stop_handlers();
  TrainSummary summary;
  summary.start_step = st.step;
  summary.rank = rank;
  const int64_t accum = cfg.optim.accum_steps;
  const int64_t log_every = cfg.log.interval;
  log::info("training {} steps ({} per epoch, batch {} patients, accumulation {}) from step {}",
            total, steps_per_epoch, cfg.train.batch_size, accum, st.step);
  auto out_of_time = [&] {
    const double minutes =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count() / 60.0;
    return options.max_minutes > 0 && minutes >= options.max_minutes;
  };
  double wait_s = 0, busy_s = 0;
  int64_t patients_window = 0;
  auto window_start = std::chrono::steady_clock::now();
  int64_t last_ckpt_step = -1;
  while (st.step < total) {
    auto t0 = std::chrono::steady_clock::now();
    MicroBatch batch = data.next_train(device);
    auto t1 = std::chrono::steady_clock::now();
    const double lr = lr_at(cfg.optim, st.step, total);
    set_lr(opt, lr);
    opt.zero_grad(true);
    const double scale = precision == Precision::kFp16 ? st.loss_scale : 1.0;
    StepLosses losses =
        forward_backward(net, split_batch(batch, accum), loss_opts, precision, scale, step_comm);
    // Distributed: the stop decision is agreed here, in the loss all-reduce.
    bool any_rank_stops = false;
    if (comm) any_rank_stops = reduce_losses(*comm, losses, stop_requested() || out_of_time());
    if (scale != 1.0) {  // fp16: unscale every gradient in one foreach call
      std::vector<at::Tensor> grads;
      for (const auto& p : params)
        if (p.grad().defined()) grads.push_back(p.grad());
      at::_foreach_div_(grads, at::Scalar(scale));
    }
    const double gnorm = clip_grad_norm(params, cfg.optim.clip_norm);
    const bool finite = std::isfinite(gnorm) && std::isfinite(losses.total.item<double>());
    if (!finite) {
      ++st.skipped;
      ++st.consecutive_skips;
      opt.zero_grad(true);
      if (precision == Precision::kFp16) {
        st.loss_scale = std::max(1.0, st.loss_scale / 2);
        st.good_since_growth = 0;
      }
      log::warn("step {}: non-finite loss or gradient (norm {}), step skipped ({} in a row)",
                st.step + 1, gnorm, st.consecutive_skips);
      if (st.consecutive_skips >= cfg.train.max_skipped_steps)
        throw Error(str_cat("training stopped: ", st.consecutive_skips,
                            " consecutive steps with a non-finite loss or gradient "
                            "(train.max_skipped_steps). HINT: lower optim.lr, enable "
                            "optim.clip_norm, or check the data"));
    } else {
      st.consecutive_skips = 0;
      opt.step();
      {
        torch::NoGradGuard ng;
        for (at::Tensor* s : {&net->logit_scale, &net->logit_scale_left, &net->logit_scale_right})
          s->clamp_(0, cfg.loss.logit_scale_max);
      }
      if (precision == Precision::kFp16 && ++st.good_since_growth >= 2000) {
        st.loss_scale *= 2;
        st.good_since_growth = 0;
      }
    }
    ++st.step;
    maybe_fault("RETCLIP_FAULT_KILL_AFTER_STEP", st.step);
    auto t2 = std::chrono::steady_clock::now();
    wait_s += std::chrono::duration<double>(t1 - t0).count();
    busy_s += std::chrono::duration<double>(t2 - t1).count();
    patients_window += batch.size() * world;

    if (st.step % log_every == 0 || st.step == total) {
      const double window = std::chrono::duration<double>(t2 - window_start).count();
      const double pps = window > 0 ? patients_window / window : 0;
      const double wait_share = (wait_s + busy_s) > 0 ? wait_s / (wait_s + busy_s) : 0;
      const double comm_s = comm ? comm->comm_seconds() : 0.0;
      const double comm_share = (wait_s + busy_s) > 0 ? comm_s / (wait_s + busy_s) : 0;
      if (comm) comm->reset_comm_seconds();
      const double loss = losses.total.item<double>();
      std::map<std::string, double> m{
          {"train/loss", loss},
          {"train/loss_patient", losses.patient.item<double>()},
          {"train/loss_left", losses.left.item<double>()},
          {"train/loss_right", losses.right.item<double>()},
          {"train/acc_patient_i2t", losses.acc_patient_i2t},
          {"train/acc_patient_t2i", losses.acc_patient_t2i},
          {"train/lr", lr},
          {"train/grad_norm", gnorm},
          {"train/logit_scale", std::exp(net->logit_scale.item<double>())},
          {"train/logit_scale_left", std::exp(net->logit_scale_left.item<double>())},
          {"train/logit_scale_right", std::exp(net->logit_scale_right.item<double>())},
          {"train/patients_per_s", pps},
          {"train/data_wait_share", wait_share},
          {"train/comm_share", comm_share},
          {"train/skipped_steps", static_cast<double>(st.skipped)},
          {"train/peak_rss_gib", util::peak_rss_bytes() / 1073741824.0}};
      sinks.write(st.step, m, wall_time_s());
      const double remaining =
          pps > 0 ? (total - st.step) * cfg.train.batch_size * world / pps : 0;
      log::info(
          "step {}/{} (epoch {}) | loss {:.4f} (patient {:.4f} left {:.4f} right {:.4f}) | lr "
          "{:.3e} | scale {:.1f}/{:.1f}/{:.1f} | {:.1f} patients/s | data wait {:.0f}%{} | ETA {} | "
          "RSS {}",
          st.step, total, (st.step - 1) / steps_per_epoch + 1, loss, m["train/loss_patient"],
          m["train/loss_left"], m["train/loss_right"], lr, m["train/logit_scale"],
          m["train/logit_scale_left"], m["train/logit_scale_right"], pps, 100 * wait_share,
          comm ? fmt::format(" | comm {:.0f}%", 100 * comm_share) : std::string(),
          util::format_duration(remaining), format_bytes(util::peak_rss_bytes()));
      patients_window = 0;
      wait_s = busy_s = 0;
      window_start = std::chrono::steady_clock::now();
    }

    const bool epoch_end = st.step % steps_per_epoch == 0;
    const bool timed_out = out_of_time();
    const bool stopping = comm ? any_rank_stops : (stop_requested() || timed_out);
    if ((cfg.train.val_every > 0 && st.step % cfg.train.val_every == 0) ||
        (epoch_end && st.step < total))
      run_validation(st.step);
    if (st.step % cfg.checkpoint.every_steps == 0 || epoch_end || stopping) {
      summary.checkpoint = save_checkpoint(st.step);
      last_ckpt_step = st.step;
    }
    if (stopping) {
      summary.interrupted = true;
      if (timed_out)
        log::info("time budget of {:g} minutes reached at step {}: stopping", options.max_minutes,
                  st.step);
      else
        log::info("stop requested: checkpoint written at step {}", st.step);
      break;
    }
  }
  if (last_ckpt_step != st.step) summary.checkpoint = save_checkpoint(st.step);
  summary.end_step = st.step;
  summary.skipped_steps = st.skipped;
  summary.final_eval = run_validation(st.step);
  sinks.flush();
  log::info("done: {} steps ({} skipped), last checkpoint {}", st.step, st.skipped, summary.checkpoint);
  return summary;
}
}  // namespace

TrainSummary run_training(const config::Config& cfg, const TrainOptions& options) {
  try {
    return run_training_impl(cfg, options);
  } catch (const std::exception& e) {
    // The run's log says why it ended; the console gets it once, from main().
    log::write_file_only(log::Level::kError, e.what());
    throw;
  }
}

}  // namespace retclip::train
