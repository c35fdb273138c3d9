// The pretraining loop (see trainer.hpp). Sections: signals, the run (directory, logging,
// device, process group), progress and metrics, validation, the probe (eval.probe),
// resume, the loop.
#include "retclip/train/trainer.hpp"

#include <fmt/format.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "retclip/dist/comm.hpp"
#include "retclip/dist/env.hpp"
#include "retclip/eval/probe.hpp"
#include "retclip/io/checkpoint_store.hpp"
#include "retclip/train/data_stream.hpp"
#include "retclip/train/metrics.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/schedule.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/train/state.hpp"
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
using Clock = std::chrono::steady_clock;

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

bool stop_requested() {
  return g_stop_signals.load() > 0;
}

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// ---- the run ---------------------------------------------------------------------

// ---- progress and metrics ----------------------------------------------------------

/// The progress line and the train/* metrics (rank 0 writes metrics.jsonl and
/// TensorBoard; the values are already averaged over ranks).
class StepLog {
 public:
  StepLog(const config::Config& cfg, const Run& run, int64_t total, int64_t steps_per_epoch,
          int64_t start_step)
      : cfg_(cfg), run_(run), total_(total), steps_per_epoch_(steps_per_epoch) {
    if (!run.primary()) return;
    sinks_.add(std::make_shared<JsonlSink>(run.dir / "metrics.jsonl", start_step));
    if (cfg.log.tensorboard) sinks_.add(std::make_shared<TensorBoardSink>(run.dir / "tensorboard"));
  }

  /// Counts a step's patients and how long it waited for data and computed.
  void add(int64_t patients, double wait_s, double busy_s) {
    patients_ += patients;
    wait_s_ += wait_s;
    busy_s_ += busy_s;
  }

  /// Writes the metrics and the progress line of `step`, then starts a new window.
  void write(int64_t step, const StepResult& r, double lr, const model::RetClip& net) {
    const double window = seconds_between(window_start_, Clock::now());
    const double pps = window > 0 ? patients_ / window : 0;
    const double step_s = wait_s_ + busy_s_;
    std::map<std::string, double> m{
        {"train/loss", r.losses.total.item<double>()},
        {"train/lr", lr},
        {"train/grad_norm", r.grad_norm},
        {"train/patients_per_s", pps},
        {"train/data_wait_share", step_s > 0 ? wait_s_ / step_s : 0},
        {"train/comm_share", step_s > 0 ? run_.comm->comm_seconds() / step_s : 0},
        {"train/skipped_steps", static_cast<double>(skipped_)},
        {"train/peak_rss_gib", util::peak_rss_bytes() / 1073741824.0}};
    std::string levels, scales;
    for (model::Level l : model::kLevels) {
      const std::string n = model::level_name(l);
      m["train/loss_" + n] = r.losses.loss[l].item<double>();
      m["train/acc_" + n + "_i2t"] = r.losses.acc_i2t[l];
      m["train/acc_" + n + "_t2i"] = r.losses.acc_t2i[l];
      m["train/logit_scale" + std::string(l == model::Level::kPatient ? "" : "_" + n)] =
          std::exp(net->logit_scale_of(l).item<double>());
      levels += fmt::format("{}{} {:.4f}", levels.empty() ? "" : " ", n, m["train/loss_" + n]);
      scales += fmt::format("{}{:.1f}", scales.empty() ? "" : "/",
                            std::exp(net->logit_scale_of(l).item<double>()));
    }
    sinks_.write(step, m, wall_time_s());
    const double eta = pps > 0 ? (total_ - step) * cfg_.train.batch_size * run_.env.world / pps : 0;
    log::info(
        "step {}/{} (epoch {}) | loss {:.4f} ({}) | acc i2t {:.0f}% | lr {:.3e} | scale {} | "
        "{:.1f} patients/s | data wait {:.0f}%{} | ETA {} | RSS {:.2f} GiB",
        step, total_, (step - 1) / steps_per_epoch_ + 1, m["train/loss"], levels,
        100 * r.losses.acc_i2t[model::Level::kPatient], lr, scales, pps,
        100 * m["train/data_wait_share"],
        run_.env.distributed() ? fmt::format(" | comm {:.0f}%", 100 * m["train/comm_share"]) : "",
        util::format_duration(eta), m["train/peak_rss_gib"]);
    run_.comm->reset_comm_seconds();
    patients_ = 0;
    wait_s_ = busy_s_ = 0;
    window_start_ = Clock::now();
  }

  void set_skipped(int64_t n) { skipped_ = n; }
  MetricsSink& sinks() { return sinks_; }

 private:
  const config::Config& cfg_;
  const Run& run_;
  int64_t total_, steps_per_epoch_, skipped_ = 0, patients_ = 0;
  double wait_s_ = 0, busy_s_ = 0;
  Clock::time_point window_start_ = Clock::now();
  MultiSink sinks_;
};

// ---- validation --------------------------------------------------------------------

/// Rank 0 validates on data.val (the other ranks wait at their next collective); a
/// second call at the same step returns the first result.
class Validator {
 public:
  Validator(const config::Config& cfg, const Run& run, TrainData& data, model::RetClip net,
            MetricsSink& sinks)
      : run_(run),
        data_(data),
        net_(std::move(net)),
        sinks_(sinks),
        loss_(loss_options(cfg)),
        precision_(parse_precision(cfg.train.precision)) {}

  std::optional<EvalResult> run(int64_t step) {
    if (!data_.has_val() || !run_.primary()) return std::nullopt;
    if (step == last_step_) return last_;  // weights unchanged since then
    EvalResult r =
        evaluate(net_, data_.val_source(run_.device), data_.val_size(), loss_, precision_);
    log::info("validation at step {}: {}", step, r.to_string());
    sinks_.write(step, r.metrics(), wall_time_s());
    last_step_ = step;
    last_ = r;
    return r;
  }

 private:
  const Run& run_;
  TrainData& data_;
  model::RetClip net_;
  MetricsSink& sinks_;
  loss::TripartiteLossOptions loss_;
  Precision precision_;
  int64_t last_step_ = -1;
  std::optional<EvalResult> last_;
};

// ---- probe during pretraining (eval.probe) ------------------------------------------

// A linear probe of the image encoder on a labelled set every eval.probe.every_steps
// steps and at the last step, on the primary rank; its labelled set is read before the
// first step, so a bad eval.probe block stops the run before it trains.
class Prober {
 public:
  Prober(const config::Config& cfg, const Run& run, model::RetClip net, MetricsSink& sinks)
      : cfg_(cfg), net_(std::move(net)), sinks_(sinks) {
    if (cfg.eval.probe.every_steps <= 0 || !run.primary()) return;
    setup_ = eval::probe_setup(cfg);
    log::info("eval.probe: {} ({} {} items, {} classes) every {} steps", cfg.eval.probe.data,
              setup_->set.items.size(), setup_->set.level, setup_->set.classes.size(),
              cfg.eval.probe.every_steps);
  }

  void run(int64_t step, int64_t total) {
    if (!setup_ || step == last_step_) return;
    if (step % cfg_.eval.probe.every_steps != 0 && step != total) return;
    const auto t0 = Clock::now();
    std::map<std::string, double> m = eval::probe_during_training(net_, cfg_, *setup_);
    log::info("probe at step {}: test macro AUROC {:.4f}, validation {} {:.4f} ({:.1f} s)", step,
              m.count("probe/auroc_macro") ? m.at("probe/auroc_macro") : NAN, setup_->probe.select,
              m.at("probe/val_" + setup_->probe.select), seconds_between(t0, Clock::now()));
    sinks_.write(step, m, wall_time_s());
    last_step_ = step;
  }

 private:
  const config::Config& cfg_;
  model::RetClip net_;
  MetricsSink& sinks_;
  std::optional<eval::ProbeSetup> setup_;
  int64_t last_step_ = -1;
};

// ---- resume and the schedule of side jobs -------------------------------------------

/// The state of a fresh run, or the one of checkpoint.resume (weights, optimizer, RNG
/// and data cursor restored).
TrainState resume_or_start(const config::Config& cfg, const Run& run, io::CheckpointStore& store,
                           const CheckpointParts& parts, TrainData& data) {
  TrainState st;
  st.world_size = run.env.world;
  st.config_hash = run.config_hash;
  st.scaler.enabled = parse_precision(cfg.train.precision) == Precision::kFp16;
  auto ck = store.resolve(cfg.checkpoint.resume);
  if (!ck) return st;
  const bool fp16 = st.scaler.enabled;
  st = load_checkpoint(*ck, parts, *run.comm, cfg.train.seed);
  st.scaler.enabled = fp16;
  data.restore(st.data);
  for (const auto& change :
       resume_config_changes(util::read_file(ck->path / io::CheckpointLayout::kConfig), cfg))
    log::warn("config differs from the checkpoint, resume is not exact: {}", change);
  st.world_size = run.env.world;
  st.config_hash = run.config_hash;
  return st;
}

/// train.val_every steps; 0 = at the end of every epoch (not after the last step: the
/// final validation follows the loop).
bool validation_due(const config::Config& cfg, int64_t step, int64_t steps_per_epoch,
                    int64_t total) {
  if (step >= total) return false;
  if (cfg.train.val_every > 0) return step % cfg.train.val_every == 0;
  return step % steps_per_epoch == 0;
}

/// checkpoint.every_steps, and every checkpoint.every_epochs epochs when set.
bool checkpoint_due(const config::Config& cfg, int64_t step, int64_t steps_per_epoch) {
  const int64_t e = cfg.checkpoint.every_epochs;
  return step % cfg.checkpoint.every_steps == 0 || (e > 0 && step % (e * steps_per_epoch) == 0);
}

int64_t total_steps(const config::Config& cfg, const TrainData& data) {
  const int64_t per_epoch = data.steps_per_epoch();
  RETCLIP_CHECK_USAGE(per_epoch > 0, "the training set (", data.size(),
                      " patients) does not fill one batch of ", cfg.train.batch_size,
                      " (train.batch_size). HINT: lower train.batch_size or add data");
  return cfg.train.steps > 0 ? cfg.train.steps : cfg.train.epochs * per_epoch;
}

void log_model(const config::Config& cfg, const model::RetClip& net, const BuiltOptimizer& built) {
  int64_t n = 0;
  for (const auto& p : net->parameters()) n += p.numel();
  log::info("model: vision {} + text {}, embed {}, {:.2f}M parameters", cfg.model.vision.preset,
            cfg.model.text.preset, net->options().embed_dim(), n / 1e6);
  log::info("{}", built.summary.to_string());
}

// A run whose every step was skipped as non-finite trained nothing: not a success.
void check_trained(const TrainState& st, int64_t start_step, int64_t skipped_at_start) {
  const int64_t steps = st.step - start_step, skipped = st.skipped - skipped_at_start;
  if (steps > 0 && skipped == steps)
    throw Error(str_cat("every one of the ", steps,
                        " steps of this run was skipped (non-finite loss or gradient): nothing "
                        "was trained. HINT: check model.init.* for NaN/Inf weights, lower "
                        "optim.lr, or enable optim.clip_norm"));
}

// A tokenizer the shards brought (data.tokenizer.path empty) becomes part of the run's
// config, as an absolute path, and a copy of the file stays in the run directory: the
// checkpoints then say which tokenizer their text tower reads, and export, eval and
// zeroshot find it wherever they run.
void record_tokenizer(config::Config& cfg, Run& run, const TrainData& data) {
  const data::Tokenizer* tok = data.tokenizer();
  if (!tok) return;
  const fs::path file = fs::absolute(tok->path()).lexically_normal();
  if (run.primary()) {
    const fs::path copy = run.dir / ("tokenizer" + file.extension().string());
    if (fs::absolute(copy).lexically_normal() != file)
      util::write_file_atomic(copy, util::read_file(file));
  }
  if (cfg.data.tokenizer.path == file.string() && cfg.data.tokenizer.type == tok->type()) return;
  cfg.data.tokenizer.path = file.string();
  cfg.data.tokenizer.type = tok->type();
  record_config(run, cfg);
  log::info("data.tokenizer: {} {} recorded in the run's config", tok->type(), file.string());
}

// ---- the loop ----------------------------------------------------------------------

TrainSummary run_training_impl(const config::Config& given, const TrainOptions& options,
                               NewRunDir& new_dir) {
  const auto t_start = Clock::now();
  config::Config cfg = given;
  Run run = open_run(cfg, "train", cfg.train.precision);
  const int rank = run.env.rank, world = run.env.world;
  check_init_given(cfg.model.init);  // before any data is read
  TrainData data = TrainData::open(cfg, rank, world);
  log::info("{}", data.describe());
  record_tokenizer(cfg, run, data);
  model::RetClip net = build_model(cfg, data.vocab_size(), run.device, rank);
  BuiltOptimizer built = build_adamw(*net, cfg.optim);
  log_model(cfg, net, built);
  const int64_t total = total_steps(cfg, data), per_epoch = data.steps_per_epoch();

  const fs::path ckpt_dir = checkpoint_dir(cfg);
  io::CheckpointStore store(ckpt_dir,
                            io::CheckpointStore::options_from(cfg.checkpoint, run.config_hash));
  const CheckpointParts parts{*net, *built.optimizer, run.device, run.config_yaml};
  TrainState st = resume_or_start(cfg, run, store, parts, data);
  StepContext ctx = make_step_context(cfg, net, *built.optimizer, run.comm);
  StepLog progress(cfg, run, total, per_epoch, st.step);
  Validator validator(cfg, run, data, net, progress.sinks());
  Prober prober(cfg, run, net, progress.sinks());
  auto save = [&] {
    st.data = data.state();
    return save_checkpoint(store, st, parts, *run.comm, st.step / per_epoch).string();
  };
  auto out_of_time = [&] {
    return options.max_minutes > 0 &&
           seconds_between(t_start, Clock::now()) >= 60 * options.max_minutes;
  };

  install_stop_handlers();
  TrainSummary summary{st.step, st.step, 0, false, "", std::nullopt, rank};
  const int64_t skipped_at_start = st.skipped;
  log::info("training {} steps ({} per epoch, batch {} patients, accumulation {}) from step {}",
            total, per_epoch, cfg.train.batch_size, cfg.optim.accum_steps, st.step);
  int64_t last_ckpt_step = -1;
  new_dir.keep();  // from here on the run directory holds a run worth keeping
  while (st.step < total) {
    const auto t0 = Clock::now();
    MicroBatch batch = data.next_train(run.device);
    const auto t1 = Clock::now();
    const double lr = lr_at(cfg.optim, st.step, total);
    StepResult r = train_step(ctx, batch, lr, st.scaler, stop_requested() || out_of_time());
    st.count(r, cfg.train.max_skipped_steps);
    fault_point("RETCLIP_FAULT_KILL_AFTER_STEP", st.step);
    progress.add(batch.size() * world, seconds_between(t0, t1), seconds_between(t1, Clock::now()));
    progress.set_skipped(st.skipped);

    if (st.step % cfg.log.interval == 0 || st.step == total) progress.write(st.step, r, lr, net);
    if (validation_due(cfg, st.step, per_epoch, total)) validator.run(st.step);
    prober.run(st.step, total);
    if (r.stop || checkpoint_due(cfg, st.step, per_epoch)) {
      summary.checkpoint = save();
      last_ckpt_step = st.step;
    }
    if (r.stop) {
      summary.interrupted = true;
      if (out_of_time())
        log::info("time budget of {:g} minutes reached at step {}: stopping", options.max_minutes,
                  st.step);
      else
        log::info("stop requested: checkpoint written at step {}", st.step);
      break;
    }
  }
  if (last_ckpt_step != st.step) summary.checkpoint = save();
  summary.end_step = st.step;
  summary.skipped_steps = st.skipped;
  check_trained(st, summary.start_step, skipped_at_start);
  summary.final_eval = validator.run(st.step);
  progress.sinks().flush();
  log::info("done: {} steps ({} skipped), last checkpoint {}", st.step, st.skipped,
            summary.checkpoint);
  return summary;
}
}  // namespace

TrainSummary run_training(const config::Config& cfg, const TrainOptions& options) {
  const int rank = dist::Env::from_environment().rank;
  claim_run_dir(cfg, "retclip train", options.overwrite, rank);
  NewRunDir guard(cfg, rank);
  try {
    return run_training_impl(cfg, options, guard);
  } catch (const std::exception& e) {
    // The run's log says why it ended; the console gets it once, from main().
    log::write_file_only(log::Level::kError, e.what());
    throw;
  }
}

}  // namespace retclip::train
