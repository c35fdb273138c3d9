// The one training loop (see loop.hpp). Sections: signals, resume, the loop.
#include "retclip/train/loop.hpp"

#include <torch/cuda.h>
#include <torch/optim/optimizer.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <optional>

#include "retclip/dist/comm.hpp"
#include "retclip/io/checkpoint_store.hpp"
#include "retclip/train/metrics.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/train/state.hpp"
#include "retclip/train/task.hpp"
#include "retclip/train/tensorboard.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"

namespace retclip::train {

using Clock = std::chrono::steady_clock;

// ---- signals -----------------------------------------------------------------------

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

// ---- resume ------------------------------------------------------------------------

/// The state of a fresh run, or the one of checkpoint.resume (weights, optimizer, RNG
/// and the recipe's data cursor restored); `resumed` receives the checkpoint's directory.
TrainState resume_or_start(const LoopInput& in, io::CheckpointStore& store,
                           const CheckpointParts& parts, std::string* resumed) {
  TrainState st;
  st.world_size = in.run.env.world;
  st.config_hash = in.run.config_hash;
  st.scaler.enabled = in.precision == model::Precision::kFp16;
  auto ck = store.resolve(in.cfg.checkpoint.resume);
  if (!ck) return st;
  st = load_checkpoint(*ck, parts, *in.run.comm, in.cfg.train.seed);
  st.scaler.enabled = in.precision == model::Precision::kFp16;
  in.recipe.restore(st.data);
  for (const auto& change :
       resume_config_changes(util::read_file(ck->path / io::CheckpointLayout::kConfig), in.cfg))
    log::warn("config differs from the checkpoint, resume is not exact: {}", change);
  st.world_size = in.run.env.world;
  st.config_hash = in.run.config_hash;
  *resumed = ck->path.string();
  return st;
}

/// Rank 0's metrics.jsonl and TensorBoard events; a resumed run's TensorBoard file
/// starts with the restart event that hides the old files' later points.
void open_sinks(MultiSink& sinks, const LoopInput& in, int64_t start_step) {
  if (!in.run.primary()) return;
  sinks.add(std::make_shared<JsonlSink>(in.run.dir / "metrics.jsonl", start_step));
  if (in.cfg.log.tensorboard)
    sinks.add(std::make_shared<TensorBoardSink>(in.run.dir / "tensorboard",
                                                start_step > 0 ? start_step : -1));
}

// A run whose every step was skipped as non-finite trained nothing: not a success.
void check_trained(const TrainState& st, int64_t start_step, int64_t skipped_at_start) {
  const int64_t steps = st.step - start_step, skipped = st.skipped - skipped_at_start;
  if (steps > 0 && skipped == steps)
    throw Error(str_cat("every one of the ", steps,
                        " steps of this run was skipped (non-finite loss or gradient): nothing "
                        "was trained. HINT: check model.init.* for NaN/Inf weights, lower "
                        "the learning rate, or enable gradient clipping"));
}

// ---- the loop ----------------------------------------------------------------------

/// The loop's running state: the train state, the progress window and the summary.
struct Loop {
  Loop(LoopInput& input, const TrainOptions& opts)
      : in(input),
        options(opts),
        store(checkpoint_dir(in.cfg),
              io::CheckpointStore::options_from(in.cfg.checkpoint, in.run.config_hash)),
        parts{in.task->module(), in.optimizer, in.run.device, in.run.config_yaml} {}

  LoopInput& in;
  const TrainOptions& options;
  io::CheckpointStore store;
  CheckpointParts parts;
  TrainState st;
  StepContext ctx;
  MultiSink sinks;
  StepWindow window;
  Clock::time_point window_start = Clock::now();
  LoopSummary summary;
  int64_t last_checkpoint = -1;

  bool out_of_time() const {
    return options.max_minutes > 0 &&
           seconds_between(in.started, Clock::now()) >= 60 * options.max_minutes;
  }

  std::string save() {
    st.data = in.recipe.state();
    const int64_t epoch = st.step > 0 ? (st.step - 1) / in.recipe.steps_per_epoch() + 1 : 0;
    last_checkpoint = st.step;
    return save_checkpoint(store, st, parts, *in.run.comm, epoch).string();
  }

  /// One step: batch, train_step, counters, the progress window.
  StepResult step(int64_t total) {
    const auto t0 = Clock::now();
    MicroBatch batch = in.recipe.next_batch(st.step);
    const auto t1 = Clock::now();
    const double lr = in.recipe.lr(st.step);
    StepResult r = train_step(ctx, batch, lr, st.scaler, stop_requested() || out_of_time());
    st.count(r, in.cfg.train.max_skipped_steps);
    fault_point("RETCLIP_FAULT_KILL_AFTER_STEP", st.step);
    if (in.sync_after_step && in.run.device.is_cuda())
      torch::cuda::synchronize(in.run.device.index());
    window.rows += batch.size() * in.run.env.world;
    window.wait_s += seconds_between(t0, t1);
    window.busy_s += seconds_between(t1, Clock::now());
    window.skipped = st.skipped;
    if (st.step % in.cfg.log.interval == 0 || st.step == total) {
      window.seconds = seconds_between(window_start, Clock::now());
      window.comm_s = in.run.comm->comm_seconds();
      in.recipe.log(st.step, r, lr, window, sinks);
      in.run.comm->reset_comm_seconds();
      window = StepWindow{};
      window_start = Clock::now();
    }
    return r;
  }

  void stop_message() const {
    if (out_of_time())
      log::info("time budget of {:g} minutes reached at step {}: stopping", options.max_minutes,
                st.step);
    else
      log::info("stop requested: checkpoint written at step {}; resume with checkpoint.resume=auto",
                st.step);
  }
};

}  // namespace

LoopSummary run_loop(LoopInput in, const TrainOptions& options, NewRunDir& new_dir) {
  Loop l(in, options);
  std::string resumed;
  l.st = resume_or_start(in, l.store, l.parts, &resumed);
  l.ctx = make_step_context(in.task, in.optimizer, in.run.comm, in.step);
  open_sinks(l.sinks, in, l.st.step);
  install_stop_handlers();
  const int64_t total = in.recipe.total_steps(), skipped_at_start = l.st.skipped;
  l.summary.start_step = l.st.step;
  l.summary.checkpoint = resumed;
  log::info("{} from step {}", in.recipe.describe(), l.st.step);
  new_dir.keep();  // from here on the run directory holds a run worth keeping
  while (l.st.step < total) {
    const StepResult r = l.step(total);
    in.recipe.after_step(l.st.step, l.sinks);
    if (r.stop || in.recipe.checkpoint_due(l.st.step)) l.summary.checkpoint = l.save();
    if (r.stop) {
      l.summary.interrupted = true;
      l.stop_message();
      break;
    }
  }
  if (l.last_checkpoint != l.st.step && l.st.step > l.summary.start_step)
    l.summary.checkpoint = l.save();
  l.summary.end_step = l.st.step;
  l.summary.skipped_steps = l.st.skipped;
  check_trained(l.st, l.summary.start_step, skipped_at_start);
  in.recipe.after_loop(l.st.step, l.summary.interrupted, l.sinks);
  l.sinks.flush();
  log::info("done: {} steps ({} skipped), last checkpoint {}", l.st.step, l.st.skipped,
            l.summary.checkpoint);
  return l.summary;
}

}  // namespace retclip::train
