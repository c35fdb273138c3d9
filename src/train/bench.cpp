// run_bench: the training step, timed phase by phase (see bench.hpp). Sections: device
// and memory helpers, the batch, the task (pretraining or fine-tuning), the run, the
// result's JSON and table.
#include "retclip/train/bench.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#if __has_include(<c10/cuda/CUDACachingAllocator.h>) && __has_include(<cuda_runtime_api.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define RETCLIP_BENCH_CUDA_STATS 1
#endif

#include "retclip/dist/comm.hpp"
#include "retclip/dist/env.hpp"
#include "retclip/loss/classification.hpp"
#include "retclip/loss/tripartite.hpp"
#include "retclip/model/classifier.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/data_stream.hpp"
#include "retclip/train/finetune.hpp"
#include "retclip/train/flops.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/schedule.hpp"
#include "retclip/train/setup.hpp"
#include "retclip/train/step.hpp"
#include "retclip/train/task.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/system.hpp"

namespace retclip::train {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
// Vocabulary of synthetic token ids when the text preset has none (bert-tiny / -micro)
// and model.text.vocab_size is 0: the size of the demo's sentencepiece tokenizer.
constexpr int64_t kSyntheticVocab = 8000;

// ---- device and memory -----------------------------------------------------------

// Waits for the device's queued work: phase boundaries in bench mode only.
void sync(const at::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

void reset_peak_memory(const at::Device& d) {
#ifdef RETCLIP_BENCH_CUDA_STATS
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index());
#else
  (void)d;
#endif
}

// Peak allocated / reserved bytes of the CUDA caching allocator since the last reset.
std::pair<int64_t, int64_t> cuda_peak_bytes(const at::Device& d) {
#ifdef RETCLIP_BENCH_CUDA_STATS
  if (d.is_cuda()) {
    const auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return {s.allocated_bytes[agg].peak, s.reserved_bytes[agg].peak};
  }
#else
  (void)d;
#endif
  return {0, 0};
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      return colon == std::string::npos ? line
                                        : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "cpu";
}

// ---- the batch ---------------------------------------------------------------------

// Random images and reports of the configured shape, made once on the device. Reports
// have between T/2 and T tokens ([CLS]-like id first, pad id 0 after the end).
MicroBatch synthetic_batch(int64_t b, int64_t s, int64_t t, int64_t vocab, const at::Device& d) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  auto f = at::TensorOptions().dtype(at::kFloat);
  at::Tensor tokens = at::randint(1, vocab, {b, t}, gen, at::TensorOptions().dtype(at::kLong));
  at::Tensor len = at::randint(std::max<int64_t>(1, t / 2), t + 1, {b, 1}, gen,
                               at::TensorOptions().dtype(at::kLong));
  tokens.masked_fill_(at::arange(t, at::kLong).unsqueeze(0).ge(len), 0);
  MicroBatch m{at::randn({b, 3, s, s}, gen, f), at::randn({b, 3, s, s}, gen, f), tokens,
               at::ones({b}, at::kBool), at::ones({b}, at::kBool)};
  return {m.left.to(d), m.right.to(d), m.tokens.to(d), m.has_left.to(d), m.has_right.to(d)};
}

int64_t synthetic_vocab(const config::Config& cfg) {
  if (cfg.model.text.vocab_size > 0) return cfg.model.text.vocab_size;
  try {
    return model::text_preset(cfg.model.text.preset, 0).vocab_size();
  } catch (const UsageError&) {
    return kSyntheticVocab;  // preset without a fixed vocabulary
  }
}

// Kineto profiler over the timed steps (--profile).
std::set<torch::profiler::impl::ActivityType> profiler_activities(const at::Device& d) {
  std::set<torch::profiler::impl::ActivityType> a{torch::profiler::impl::ActivityType::CPU};
  if (d.is_cuda()) a.insert(torch::profiler::impl::ActivityType::CUDA);
  return a;
}

void profiler_start(const at::Device& d) {
  const torch::profiler::impl::ProfilerConfig pc(torch::profiler::impl::ProfilerState::KINETO,
                                                 /*report_input_shapes=*/true);
  torch::autograd::profiler::prepareProfiler(pc, profiler_activities(d));
  torch::autograd::profiler::enableProfiler(pc, profiler_activities(d));
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

nlohmann::json setup_json(const config::Config& cfg, const model::RetClip& net) {
  const auto& vo = net->options().vision();
  const auto& to = net->options().text();
  return {{"vision",
           {{"image_size", vo.image_size()},
            {"patch_size", vo.patch_size()},
            {"width", vo.width()},
            {"layers", vo.layers()},
            {"heads", vo.num_heads()},
            {"mlp_ratio", vo.mlp_ratio()}}},
          {"text",
           {{"vocab_size", to.vocab_size()},
            {"hidden", to.hidden()},
            {"layers", to.layers()},
            {"heads", to.heads()},
            {"intermediate", to.intermediate()},
            {"max_position", to.max_position()},
            {"dropout", to.hidden_dropout()}}},
          {"embed_dim", net->options().embed_dim()},
          {"logit_scale_init", net->options().logit_scale_init()},
          {"logit_scale_max", cfg.loss.logit_scale_max},
          {"optim",
           {{"lr", cfg.optim.lr},
            {"weight_decay", cfg.optim.weight_decay},
            {"betas", cfg.optim.betas},
            {"eps", cfg.optim.eps},
            {"clip_norm", cfg.optim.clip_norm},
            {"no_decay", cfg.optim.no_decay}}},
          {"seed", cfg.train.seed}};
}

// ---- the run -----------------------------------------------------------------------

void check_options(const BenchOptions& o) {
  RETCLIP_CHECK_USAGE(o.steps >= 1, "--steps: expected at least 1 timed step but got ", o.steps);
  RETCLIP_CHECK_USAGE(o.warmup >= 0, "--warmup: expected 0 or more steps but got ", o.warmup);
  RETCLIP_CHECK_USAGE(o.data == "synthetic" || o.data == "loader",
                      "--data: expected synthetic or loader but got '", o.data, "'");
  RETCLIP_CHECK_USAGE(o.task == "pretrain" || o.task == "finetune",
                      "--task: expected pretrain or finetune but got '", o.task, "'");
  RETCLIP_CHECK_USAGE(o.task == "pretrain" || o.data == "synthetic",
                      "--task finetune times synthetic batches only. HINT: --data synthetic");
}

// The batches of the run: the training loader (the same batches `retclip train` sees)
// or one synthetic batch made once on the device (other rows on other ranks).
// A folder removed when the bench ends (declared before the loader that writes into it,
// so it outlives the loader).
class ScratchDir {
 public:
  ScratchDir() = default;
  explicit ScratchDir(std::filesystem::path p) : path_(std::move(p)) {}
  ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ScratchDir& operator=(ScratchDir&& o) noexcept {
    std::swap(path_, o.path_);
    return *this;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) util::remove_tree(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct BenchData {
  ScratchDir scratch;
  std::unique_ptr<TrainData> loader;
  MicroBatch fixed;
  int64_t vocab = 0;

  MicroBatch next(const at::Device& d) { return loader ? loader->next_train(d) : fixed; }
};

BenchData open_data(const config::Config& cfg, const BenchOptions& o, const dist::Env& env) {
  BenchData d;
  if (o.data == "synthetic") {
    d.vocab = synthetic_vocab(cfg);
    return d;
  }
  RETCLIP_CHECK_USAGE(!cfg.data.train.empty(),
                      "--data loader needs data.train. HINT: use "
                      "--data synthetic, or --set data.train=PATH");
  // bad_samples.tsv goes where --bad-samples-dir says, else into a scratch folder: a
  // bench is not a run and writes nothing under log.dir.
  std::string dir = o.bad_samples_dir;
  if (dir.empty()) {
    d.scratch = ScratchDir(std::filesystem::temp_directory_path() /
                           fmt::format("retclip-bench-{}-{}", ::getpid(), env.rank));
    dir = d.scratch.path().string();
  }
  d.loader = std::make_unique<TrainData>(TrainData::open(cfg, env.rank, env.world, dir));
  d.vocab = d.loader->vocab_size();
  return d;
}

MicroBatch rank_synthetic_batch(const config::Config& cfg, int64_t vocab, int64_t image_size,
                                int64_t rank, const at::Device& device) {
  const int64_t b = cfg.train.batch_size;
  MicroBatch m = synthetic_batch(b, image_size, cfg.data.context_length, vocab, device);
  if (rank == 0) return m;
  at::Tensor perm = at::roll(at::arange(b, at::kLong), rank).to(device);
  return {m.left.index_select(0, perm), m.right.index_select(0, perm),
          m.tokens.index_select(0, perm), m.has_left, m.has_right};
}

// Sums of the timed steps' phases.
struct Timings {
  StepPhases phases;
  double data_ms = 0, total_ms = 0, comm_s = 0;
};

// ---- the task ------------------------------------------------------------------------

/// What the timed loop runs: the step context (task, optimizer, gradient sync), the
/// batches, the schedule, and what the result reports about the model.
struct BenchTask {
  std::unique_ptr<torch::optim::AdamW> optimizer;
  StepContext ctx;
  Precision precision = Precision::kFp32;
  std::function<MicroBatch()> next;
  double lr = 0;  ///< peak lr of the schedule (fine-tuning: constant)
  std::function<double(int64_t)> lr_at_step;
  double flop_per_step = 0;  ///< analytic training FLOPs of one step (all rows)
  double flop_per_row = 0;
  nlohmann::json setup;
  std::string unit = "patients", vision, text;
};

/// Pretraining: the config's RetClip, AdamW and ContrastiveTask, on synthetic batches or
/// the training loader (the same batches `retclip train` sees).
BenchTask pretrain_task(const config::Config& cfg, const BenchOptions& o, BenchData& data,
                        const dist::Env& env, const at::Device& device,
                        std::shared_ptr<dist::Comm> comm, BenchResult& r) {
  BenchTask t;
  model::RetClip net = build_model(cfg, data.vocab, device, env.rank);
  for (const auto& p : net->parameters()) r.params += p.numel();
  BuiltOptimizer built = build_adamw(*net, cfg.optim);
  t.optimizer = std::move(built.optimizer);
  t.ctx = make_step_context(cfg, net, *t.optimizer, std::move(comm));
  t.precision = cfg.train.precision;
  r.image_size = net->options().vision().image_size();
  r.tokens = cfg.data.context_length;
  r.batch = cfg.train.batch_size;
  r.accum_steps = cfg.optim.accum_steps;
  if (!data.loader)
    data.fixed = rank_synthetic_batch(cfg, data.vocab, r.image_size, env.rank, device);
  t.next = [&data, device] { return data.next(device); };
  // The learning rate follows the training schedule over train.steps (or the bench's own
  // steps), so the first steps equal those of `retclip train` on the same config.
  const int64_t total = cfg.train.steps > 0 ? cfg.train.steps : o.warmup + o.steps;
  t.lr_at_step = [&cfg, total](int64_t i) { return lr_at(cfg.optim, i, total); };
  const FlopCount f = count_flops(net->options(), r.tokens, r.batch);
  t.flop_per_step = f.train_per_step();
  t.flop_per_row = f.train_per_patient();
  t.setup = setup_json(cfg, net);
  t.vision = cfg.model.vision.preset;
  t.text = cfg.model.text.preset;
  return t;
}

/// Fine-tuning: a classifier on the config's vision tower (finetune.level, .feature,
/// .classes or 2, drop-path), layer-decay AdamW and the ClassifierTask, on one synthetic
/// batch of finetune.batch_size rows with smoothed one-hot targets, at the peak lr.
BenchTask finetune_task(const config::Config& cfg, const dist::Env& env, const at::Device& device,
                        std::shared_ptr<dist::Comm> comm, BenchResult& r) {
  const auto& f = cfg.finetune;
  BenchTask t;
  const bool patient = f.level == config::Level::kPatient;
  const int64_t classes = f.classes.size() >= 2 ? static_cast<int64_t>(f.classes.size()) : 2;
  const model::RetClipOptions ro = model::retclip_options(cfg.model, 8);
  model::VisionTransformerOptions vo = ro.vision();
  vo.drop_path(f.drop_path).grad_checkpointing(false);
  torch::manual_seed(cfg.train.seed);
  model::Classifier net(
      model::ClassifierOptions(vo, classes)
          .level(patient ? model::ClassifierLevel::kPatient : model::ClassifierLevel::kEye)
          .feature(f.feature));
  apply_classifier_freeze(net, f.freeze);
  net->to(device);
  net->train();
  for (const auto& p : net->parameters()) r.params += p.numel();
  LayerDecayOptimizer opt = finetune_optimizer(cfg, net);
  t.optimizer = std::move(opt.optimizer);
  t.precision = model::resolve_precision(f.precision, device);
  auto task = std::make_shared<ClassifierTask>(net, at::Tensor(), t.precision);
  StepOptions so;
  so.accum_steps = f.accum_steps;
  so.clip_norm = f.clip_norm;
  so.bucket_mb = cfg.dist.bucket_mb;
  so.lr_scale = opt.lr_scale;
  t.ctx = make_step_context(task, *t.optimizer, std::move(comm), so);
  r.image_size = ro.vision().image_size();
  r.batch = f.batch_size;
  r.accum_steps = f.accum_steps;
  const int64_t b = f.batch_size, s = r.image_size;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234 + env.rank);
  MicroBatch m;
  m.left = at::randn({b, 3, s, s}, gen, at::kFloat).to(device);
  m.right = patient ? at::randn({b, 3, s, s}, gen, at::kFloat).to(device) : at::Tensor();
  m.has_left = at::ones({b}, at::kBool).to(device);
  m.has_right = at::ones({b}, at::kBool).to(device);
  at::Tensor label = at::randint(0, classes, {b}, gen, at::TensorOptions().dtype(at::kLong));
  m.targets =
      loss::smooth_targets(at::one_hot(label, classes).to(at::kFloat), f.label_smoothing, false)
          .to(device);
  t.next = [m] { return m; };
  const double lr = f.lr > 0 ? f.lr : f.blr * static_cast<double>(b * env.world) / 256.0;
  t.lr_at_step = [lr](int64_t) { return lr; };
  // Forward, backward (2x) of the image tower per image; the head is negligible.
  const double images = patient ? 2.0 : 1.0;
  t.flop_per_row = 3 * images * count_flops(ro, 1, 1).vision_per_image;
  t.flop_per_step = t.flop_per_row * static_cast<double>(b);
  t.setup = {{"task", "finetune"},   {"level", patient ? "patient" : "eye"},
             {"feature", config::name(f.feature)}, {"classes", classes},
             {"freeze", config::name(f.freeze)},   {"seed", cfg.train.seed}};
  t.unit = patient ? "patients" : "images";
  t.vision = cfg.model.vision.preset;
  t.text = "-";
  return t;
}

// ---- the run ---------------------------------------------------------------------------

void fill_result(BenchResult& r, const config::Config& cfg, const BenchOptions& o,
                 const BenchTask& task, const Timings& t, const at::Device& device) {
  const double n = static_cast<double>(o.steps);
  r.steps = o.steps;
  r.warmup = o.warmup;
  r.step_ms = t.total_ms / n;
  r.data_ms = t.data_ms / n;
  r.forward_ms = t.phases.forward_ms / n;
  r.backward_ms = t.phases.backward_ms / n;
  r.optimizer_ms = t.phases.optimizer_ms / n;
  r.comm_ms = 1000 * t.comm_s / n;
  r.patients_per_s = r.step_ms > 0 ? 1000.0 * r.batch * r.world / r.step_ms : 0;
  r.final_loss = r.losses.empty() ? 0 : r.losses.back();
  r.device = device.str();
  r.precision = config::name(task.precision);
  r.data = o.data;
  r.task = o.task;
  r.unit = task.unit;
  r.vision = task.vision;
  r.text = task.text;
  r.grad_checkpointing = o.task == "pretrain" && cfg.train.grad_checkpointing;
  if (device.is_cuda()) {
    for (const auto& d : util::system_info().cuda_devices)
      if (d.index == device.index()) r.device_name = d.name;
    const auto [alloc, reserved] = cuda_peak_bytes(device);
    r.peak_memory_gib = alloc / kGiB;
    r.peak_reserved_gib = reserved / kGiB;
    r.memory_kind = "cuda_allocated";
  } else {
    r.device_name = cpu_name();
    r.peak_memory_gib = util::peak_rss_bytes() / kGiB;
    r.memory_kind = "rss";
  }
  r.setup = task.setup;
  r.gflop_per_patient = task.flop_per_row / 1e9;
  r.tflops_achieved = r.step_ms > 0 ? task.flop_per_step / (r.step_ms / 1000.0) / 1e12 : 0;
  r.peak_tflops =
      o.peak_tflops > 0 ? o.peak_tflops : (device.is_cuda() ? peak_bf16_tflops(r.device_name) : 0);
  r.mfu = r.peak_tflops > 0 ? r.tflops_achieved / r.peak_tflops : -1;
}

/// W untimed then N timed steps of `task`; the phase sums of the timed ones.
Timings time_steps(BenchTask& task, const BenchOptions& o, const at::Device& device,
                   dist::Comm& comm, BenchResult& r) {
  LossScaler scaler;
  scaler.enabled = task.precision == Precision::kFp16;
  Timings t;
  for (int64_t i = 0; i < o.warmup + o.steps; ++i) {
    const bool timed = i >= o.warmup;
    if (i == o.warmup) {
      sync(device);
      reset_peak_memory(device);
      if (!o.profile_path.empty()) profiler_start(device);
    }
    const auto t0 = Clock::now();
    MicroBatch batch = task.next();
    sync(device);
    const double data_ms = ms_since(t0);
    StepPhases phases;
    StepResult s = train_step(task.ctx, batch, task.lr_at_step(i), scaler, false, &phases);
    r.losses.push_back(s.losses.total.item<double>());
    const double c = (o.comm_seconds ? o.comm_seconds() : 0.0) + comm.comm_seconds();
    comm.reset_comm_seconds();
    if (!timed) continue;
    t.data_ms += data_ms;
    t.total_ms += ms_since(t0);
    t.comm_s += c;
    t.phases.forward_ms += phases.forward_ms;
    t.phases.backward_ms += phases.backward_ms;
    t.phases.optimizer_ms += phases.optimizer_ms;
  }
  if (!o.profile_path.empty()) torch::autograd::profiler::disableProfiler()->save(o.profile_path);
  return t;
}

}  // namespace

BenchResult run_bench(const config::Config& cfg, const BenchOptions& o) {
  check_options(o);
  BenchResult r;
  r.threads = util::configure_threads(cfg.train.threads);
  util::tune_malloc_for_training();
  // Under `retclip launch` / torchrun: data parallel as in training (gathered features,
  // bucketed gradient all-reduce); the communication time is then measured here.
  const dist::Env env = dist::Env::from_environment();
  const at::Device device = resolve_device(cfg.train.device, env.local_rank);
  auto comm = dist::Comm::from_env(env, device, {cfg.dist.backend, cfg.dist.timeout_s});
  const config::Precision precision =
      o.task == "finetune" ? cfg.finetune.precision : cfg.train.precision;
  RETCLIP_CHECK_USAGE(
      precision == config::Precision::kFp32 || precision == config::Precision::kAuto ||
          device.is_cuda(),
      o.task == "finetune" ? "finetune" : "train", ".precision=", config::name(precision),
      " needs a CUDA device; on CPU use fp32");
  r.world = env.world;
  r.rank = env.rank;
  BenchData data = open_data(cfg, o, env);  // first: the loader knows the vocabulary
  BenchTask task = o.task == "finetune" ? finetune_task(cfg, env, device, comm, r)
                                        : pretrain_task(cfg, o, data, env, device, comm, r);
  r.split_forward_backward = r.accum_steps == 1;
  const Timings t = time_steps(task, o, device, *comm, r);
  fill_result(r, cfg, o, task, t, device);
  if (data.loader && data.loader->bad_samples() > 0)
    log::warn("bench: the loader replaced {} bad sample(s){}", data.loader->bad_samples(),
              o.bad_samples_dir.empty()
                  ? std::string("; HINT: --bad-samples-dir DIR keeps their list")
                  : " (listed in " + data.loader->bad_sample_list() + ")");
  return r;
}

// ---- output ------------------------------------------------------------------------

nlohmann::json BenchResult::to_json() const {
  auto round = [](double v, int digits) {
    const double m = std::pow(10.0, digits);
    return std::round(v * m) / m;
  };
  nlohmann::json j{{"impl", "retclip"},
                   {"task", task},
                   {"device", device},
                   {"device_name", device_name},
                   {"vision", vision},
                   {"text", text},
                   {"precision", precision},
                   {"data", data},
                   {"batch", batch},
                   {"image_size", image_size},
                   {"tokens", tokens},
                   {"accum_steps", accum_steps},
                   {"grad_checkpointing", grad_checkpointing},
                   {"threads", threads},
                   {"world", world},
                   {"params", params},
                   {"warmup", warmup},
                   {"steps", steps},
                   {"patients_per_s", round(patients_per_s, 2)},
                   {"step_ms", round(step_ms, 3)},
                   {"data_ms", round(data_ms, 3)},
                   {"forward_ms", round(forward_ms, 3)},
                   {"backward_ms", round(backward_ms, 3)},
                   {"optimizer_ms", round(optimizer_ms, 3)},
                   {"comm_ms", round(comm_ms, 3)},
                   {"split_forward_backward", split_forward_backward},
                   {"peak_memory_gib", round(peak_memory_gib, 3)},
                   {"memory_kind", memory_kind},
                   {"gflop_per_patient", round(gflop_per_patient, 3)},
                   {"tflops", round(tflops_achieved, 4)},
                   {"peak_tflops", peak_tflops},
                   {"final_loss", round(final_loss, 5)}};
  if (memory_kind == "cuda_allocated") j["peak_reserved_gib"] = round(peak_reserved_gib, 3);
  j["mfu"] = mfu >= 0 ? nlohmann::json(round(mfu, 4)) : nlohmann::json(nullptr);
  j["step_losses"] = losses;  // full precision: compared with training's metrics.jsonl
  if (!setup.is_null()) j["setup"] = setup;
  return j;
}

std::string BenchResult::table() const {
  std::string s = fmt::format(
      "retclip bench{}: {} + {}, batch {} {}{} ({} px, {} tokens), {}, {} on {} ({}), {} "
      "threads, {} data, {} timed steps after {} warm-up{}\n",
      task == "pretrain" ? "" : " (" + task + ")", vision, text, batch, unit,
      world > 1 ? fmt::format(" per rank x {} ranks", world) : "", image_size, tokens, precision,
      device, device_name.empty() ? "?" : device_name, device == "cpu" ? "CPU" : "CUDA", threads,
      data, steps, warmup, grad_checkpointing ? ", activation checkpointing" : "");
  auto row = [&](const char* name, double v, const char* unit) {
    s += fmt::format("  {:<22} {:>12.2f} {}\n", name, v, unit);
  };
  auto share = [&](const char* name, double ms) {
    s += fmt::format("  {:<22} {:>12.2f} ms  ({:4.1f}%)\n", name, ms,
                     step_ms > 0 ? 100 * ms / step_ms : 0.0);
  };
  row("throughput", patients_per_s, (unit + "/s").c_str());
  row("step", step_ms, "ms");
  share("  data wait", data_ms);
  share(split_forward_backward ? "  forward (+loss)" : "  forward+backward", forward_ms);
  if (split_forward_backward) share("  backward", backward_ms);
  share("  optimizer (clip+AdamW)", optimizer_ms);
  share("  communication", comm_ms);
  row(memory_kind == "rss" ? "peak memory (RSS)" : "peak memory (allocated)", peak_memory_gib,
      "GiB");
  if (memory_kind == "cuda_allocated") row("peak memory (reserved)", peak_reserved_gib, "GiB");
  row("model FLOPs", gflop_per_patient,
      (unit == "images" ? "GFLOP/image/step" : "GFLOP/patient/step"));
  row("achieved", tflops_achieved, "TFLOP/s");
  if (mfu >= 0)
    s += fmt::format("  {:<22} {:>12.1f} %  (of {:.0f} TFLOP/s peak bf16)\n", "MFU", 100 * mfu,
                     peak_tflops);
  else
    s += fmt::format("  {:<22} {:>12} (no peak rate: CPU, or unknown card; --peak-tflops)\n", "MFU",
                     "n/a");
  s += fmt::format("  {:<22} {:>12.4f}\n", "loss (last step)", final_loss);
  return s;
}

}  // namespace retclip::train
