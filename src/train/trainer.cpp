// The pretraining recipe (see trainer.hpp): what `retclip train` brings to the one loop
// (loop.hpp) besides its ContrastiveTask. Sections: the progress line, validation, the
// probe (eval.probe), the recipe, the command.
#include "retclip/train/trainer.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "retclip/dist/comm.hpp"
#include "retclip/dist/env.hpp"
#include "retclip/eval/probe.hpp"
#include "retclip/train/data_stream.hpp"
#include "retclip/train/metrics.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/schedule.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/train/step.hpp"
#include "retclip/train/task.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"
#include "retclip/util/system.hpp"

namespace retclip::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {


// ---- the progress line -------------------------------------------------------------

/// The train/* metrics and the progress line of a step (rank 0 writes the sinks; the
/// values are already averaged over ranks).
void log_pretraining_step(const config::Config& cfg, const Run& run, int64_t step, int64_t total,
                          int64_t per_epoch, const StepResult& r, double lr, const StepWindow& w,
                          const model::RetClip& net, MetricsSink& sinks) {
  const double pps = w.seconds > 0 ? w.rows / w.seconds : 0;
  const double step_s = w.wait_s + w.busy_s;
  std::map<std::string, double> m{{"train/loss", r.losses.total.item<double>()},
                                  {"train/lr", lr},
                                  {"train/grad_norm", r.grad_norm},
                                  {"train/patients_per_s", pps},
                                  {"train/data_wait_share", step_s > 0 ? w.wait_s / step_s : 0},
                                  {"train/comm_share", step_s > 0 ? w.comm_s / step_s : 0},
                                  {"train/skipped_steps", static_cast<double>(w.skipped)},
                                  {"train/peak_rss_gib", util::peak_rss_bytes() / 1073741824.0}};
  std::string levels, scales;
  for (model::Level l : model::kLevels) {
    const std::string n = model::level_name(l);
    const double scale = std::exp(net->logit_scale_of(l).item<double>());
    m["train/loss_" + n] = r.losses.loss[l].item<double>();
    m["train/acc_" + n + "_i2t"] = r.losses.acc_i2t[l];
    m["train/acc_" + n + "_t2i"] = r.losses.acc_t2i[l];
    m["train/logit_scale" + std::string(l == model::Level::kPatient ? "" : "_" + n)] = scale;
    levels += fmt::format("{}{} {:.4f}", levels.empty() ? "" : " ", n, m["train/loss_" + n]);
    scales += fmt::format("{}{:.1f}", scales.empty() ? "" : "/", scale);
  }
  sinks.write(step, m, wall_time_s());
  const double eta = pps > 0 ? (total - step) * cfg.train.batch_size * run.env.world / pps : 0;
  log::info(
      "step {}/{} (epoch {}) | loss {:.4f} ({}) | acc i2t {:.0f}% | lr {:.3e} | scale {} | "
      "{:.1f} patients/s | data wait {:.0f}%{} | ETA {} | RSS {:.2f} GiB",
      step, total, (step - 1) / per_epoch + 1, m["train/loss"], levels,
      100 * r.losses.acc_i2t[model::Level::kPatient], lr, scales, pps,
      100 * m["train/data_wait_share"],
      run.env.distributed() ? fmt::format(" | comm {:.0f}%", 100 * m["train/comm_share"]) : "",
      util::format_duration(eta), m["train/peak_rss_gib"]);
}

// ---- validation --------------------------------------------------------------------

/// Rank 0 validates on data.val (the other ranks wait at their next collective); a
/// second call at the same step returns the first result.
class Validator {
 public:
  Validator(const config::Config& cfg, const Run& run, TrainData& data, model::RetClip net)
      : run_(run),
        data_(data),
        net_(std::move(net)),
        loss_(loss_options(cfg)),
        precision_(cfg.train.precision) {}

  std::optional<EvalResult> run(int64_t step, MetricsSink& sinks) {
    if (!data_.has_val() || !run_.primary()) return std::nullopt;
    if (step == last_step_) return last_;  // weights unchanged since then
    EvalResult r =
        evaluate(net_, data_.val_source(run_.device), data_.val_size(), loss_, precision_);
    log::info("validation at step {}: {}", step, r.to_string());
    sinks.write(step, r.metrics(), wall_time_s());
    last_step_ = step;
    last_ = r;
    return r;
  }

 private:
  const Run& run_;
  TrainData& data_;
  model::RetClip net_;
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
  Prober(const config::Config& cfg, const Run& run, model::RetClip net)
      : cfg_(cfg), net_(std::move(net)) {
    if (cfg.eval.probe.every_steps <= 0 || !run.primary()) return;
    setup_ = eval::probe_setup(cfg);
    log::info("eval.probe: {} ({} {} items, {} classes) every {} steps", cfg.eval.probe.data,
              setup_->set.items.size(), config::name(setup_->set.level), setup_->set.classes.size(),
              cfg.eval.probe.every_steps);
  }

  void run(int64_t step, int64_t total, MetricsSink& sinks) {
    if (!setup_ || step == last_step_) return;
    if (step % cfg_.eval.probe.every_steps != 0 && step != total) return;
    const auto t0 = Clock::now();
    std::map<std::string, double> m = eval::probe_during_training(net_, cfg_, *setup_);
    log::info("probe at step {}: test macro AUROC {:.4f}, validation {} {:.4f} ({:.1f} s)", step,
              m.count("probe/auroc_macro") ? m.at("probe/auroc_macro") : NAN, setup_->probe.select,
              m.at("probe/val_" + setup_->probe.select), seconds_between(t0, Clock::now()));
    sinks.write(step, m, wall_time_s());
    last_step_ = step;
  }

 private:
  const config::Config& cfg_;
  model::RetClip net_;
  std::optional<eval::ProbeSetup> setup_;
  int64_t last_step_ = -1;
};

// ---- the recipe --------------------------------------------------------------------

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

/// Pretraining: the training stream's batches, optim.* schedule, the train/* metrics,
/// validation every train.val_every steps (or epoch), the probe, checkpoint.every_steps
/// and every_epochs, a final validation.
class PretrainRecipe : public Recipe {
 public:
  PretrainRecipe(const config::Config& cfg, const Run& run, TrainData& data, model::RetClip net)
      : cfg_(cfg),
        run_(run),
        data_(data),
        net_(net),
        total_(train::total_steps(cfg, data)),
        per_epoch_(data.steps_per_epoch()),
        validator_(cfg, run, data, net),
        prober_(cfg, run, net) {}

  std::string describe() const override {
    return fmt::format("training {} steps ({} per epoch, batch {} patients, accumulation {})",
                       total_, per_epoch_, cfg_.train.batch_size, cfg_.optim.accum_steps);
  }
  int64_t steps_per_epoch() const override { return per_epoch_; }
  int64_t total_steps() const override { return total_; }
  double lr(int64_t step) const override { return lr_at(cfg_.optim, step, total_); }
  MicroBatch next_batch(int64_t) override { return data_.next_train(run_.device); }
  nlohmann::json state() const override { return data_.state(); }
  void restore(const nlohmann::json& s) override { data_.restore(s); }
  void log(int64_t step, const StepResult& r, double lr, const StepWindow& w,
           MetricsSink& sinks) override {
    log_pretraining_step(cfg_, run_, step, total_, per_epoch_, r, lr, w, net_, sinks);
  }
  void after_step(int64_t step, MetricsSink& sinks) override {
    if (validation_due(cfg_, step, per_epoch_, total_)) validator_.run(step, sinks);
    prober_.run(step, total_, sinks);
  }
  bool checkpoint_due(int64_t step) const override {
    return train::checkpoint_due(cfg_, step, per_epoch_);
  }
  void after_loop(int64_t step, bool, MetricsSink& sinks) override {
    final_eval_ = validator_.run(step, sinks);
  }
  const std::optional<EvalResult>& final_eval() const { return final_eval_; }

 private:
  const config::Config& cfg_;
  const Run& run_;
  TrainData& data_;
  model::RetClip net_;
  int64_t total_, per_epoch_;
  Validator validator_;
  Prober prober_;
  std::optional<EvalResult> final_eval_;
};

void log_model(const config::Config& cfg, const model::RetClip& net, const BuiltOptimizer& built) {
  int64_t n = 0;
  for (const auto& p : net->parameters()) n += p.numel();
  log::info("model: vision {} + text {}, embed {}, {:.2f}M parameters", cfg.model.vision.preset,
            cfg.model.text.preset, net->options().embed_dim(), n / 1e6);
  log::info("{}", built.summary.to_string());
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

// ---- the command -------------------------------------------------------------------

TrainSummary run_training_impl(const config::Config& given, const TrainOptions& options,
                               NewRunDir& new_dir) {
  const auto started = Clock::now();
  config::Config cfg = given;
  Run run = open_run(cfg, "train", cfg.train.precision);
  check_init_given(cfg.model.init);  // before any data is read
  TrainData data = TrainData::open(cfg, run.env.rank, run.env.world);
  log::info("{}", data.describe());
  record_tokenizer(cfg, run, data);
  model::RetClip net = build_model(cfg, data.vocab_size(), run.device, run.env.rank);
  BuiltOptimizer built = build_adamw(*net, cfg.optim);
  log_model(cfg, net, built);
  PretrainRecipe recipe(cfg, run, data, net);
  const Precision precision = cfg.train.precision;
  auto task = std::make_shared<ContrastiveTask>(net, loss_options(cfg, run.env.world), precision,
                                                cfg.loss.logit_scale_max);
  StepOptions so;
  so.accum_steps = cfg.optim.accum_steps;
  so.clip_norm = cfg.optim.clip_norm;
  so.bucket_mb = cfg.dist.bucket_mb;
  const LoopSummary l = run_loop({cfg, run, recipe, task, *built.optimizer, so, precision, started},
                                 options, new_dir);
  return {l.start_step, l.end_step,          l.skipped_steps, l.interrupted,
          l.checkpoint, recipe.final_eval(), run.env.rank};
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
