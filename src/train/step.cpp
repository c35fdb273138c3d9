// train_step and its parts (see step.hpp): forward_backward for the plain step (k = 1)
// and full-batch-negative accumulation (k > 1), the loss reduction over ranks, the
// fp16 scaler, and the optimizer half of the step.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <functional>

#include "retclip/dist/comm.hpp"
#include "retclip/dist/grad_sync.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/step.hpp"
#include "retclip/util/error.hpp"

namespace retclip::train {

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::kFp32;
  if (s == "bf16") return Precision::kBf16;
  if (s == "fp16") return Precision::kFp16;
  throw UsageError(str_cat("train.precision: expected fp32, bf16 or fp16 but got '", s, "'"));
}

loss::TripartiteLossOptions loss_options(const config::Config& cfg, int64_t world) {
  return loss::TripartiteLossOptions()
      .weight_patient(cfg.loss.weights.patient)
      .weight_left(cfg.loss.weights.left)
      .weight_right(cfg.loss.weights.right)
      .logit_scale_max(cfg.loss.logit_scale_max)
      .local_loss(cfg.loss.local_loss)
      .world_size(world)
      .gather(cfg.loss.gather)
      .duplicates_positive(cfg.loss.duplicates == "positive");
}

at::Tensor report_ids(const at::Tensor& tokens) {
  // Two polynomial hashes of the token row modulo primes below 2^31, packed into 62
  // bits: every product stays below 2^62, so int64 never overflows, on any device.
  // Equal rows give equal ids on every rank; distinct rows collide with probability
  // about 2^-62 per pair.
  RETCLIP_CHECK(tokens.dim() == 2, "expected tokens [B, T] but got ", tokens.sizes());
  const int64_t t = tokens.size(1);
  auto hash = [&](int64_t mod, int64_t base) {
    std::vector<int64_t> w(static_cast<size_t>(t));
    int64_t p = 1;
    for (auto& x : w) {
      x = p;
      p = (p * base) % mod;
    }
    auto weights = at::tensor(w, tokens.options().dtype(at::kLong));
    return (tokens.to(at::kLong).remainder(mod) * weights).remainder(mod).sum(1).remainder(mod);
  };
  return hash(2147483647, 1000003) * 2147483648LL + hash(2147483629, 998244353 % 2147483629);
}

model::PerLevel<at::Tensor> level_report_ids(const MicroBatch& mb) {
  model::PerLevel<at::Tensor> ids;
  ids[model::Level::kPatient] = report_ids(mb.tokens);
  for (model::Level l : {model::Level::kLeft, model::Level::kRight}) {
    if (!mb.eye_report_id.defined()) {
      ids[l] = ids[model::Level::kPatient];
      continue;
    }
    auto eye = mb.eye_report_id.select(1, l == model::Level::kLeft ? 0 : 1).to(at::kLong);
    ids[l] = at::where(eye.ge(0), eye, ids[model::Level::kPatient]);
  }
  return ids;
}

at::Device resolve_device(const std::string& want, int64_t local_rank) {
  if (want == "cpu") return at::kCPU;
  const bool cuda = torch::cuda::is_available();
  RETCLIP_CHECK_USAGE(want != "cuda" || cuda,
                      "train.device is cuda but no CUDA device is usable. HINT: use "
                      "train.device=auto or cpu, or check `retclip info`");
  if (!cuda) return at::kCPU;
  const int64_t n = static_cast<int64_t>(torch::cuda::device_count());
  RETCLIP_CHECK_USAGE(local_rank < n, "local rank ", local_rank, " needs GPU ", local_rank,
                      " but this node has ", n, ". HINT: start at most one rank per GPU (--nproc)");
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

AutocastScope::AutocastScope(Precision p, const at::Device& device) {
  if (p == Precision::kFp32 || !device.is_cuda()) return;
  active_ = true;
  prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, p == Precision::kBf16 ? at::kBFloat16 : at::kHalf);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
  at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
}

model::Embeddings to_float(model::Embeddings e) {
  for (model::Level l : model::kLevels)
    for (at::Tensor* t : {&e.img[l], &e.txt[l], &e.logit_scale[l]}) *t = t->to(at::kFloat);
  return e;
}

std::vector<MicroBatch> split_batch(const MicroBatch& b, int64_t k) {
  RETCLIP_CHECK(k >= 1 && k <= b.size(), "cannot split a batch of ", b.size(), " patients into ", k,
                " micro-batches (optim.accum_steps)");
  if (k == 1) return {b};
  auto l = b.left.chunk(k), r = b.right.chunk(k), t = b.tokens.chunk(k), hl = b.has_left.chunk(k),
       hr = b.has_right.chunk(k);
  std::vector<at::Tensor> er;
  if (b.eye_report_id.defined()) er = b.eye_report_id.chunk(k);
  std::vector<MicroBatch> out;
  for (size_t i = 0; i < t.size(); ++i)
    out.push_back({l[i], r[i], t[i], hl[i], hr[i], er.empty() ? at::Tensor() : er[i]});
  return out;
}

// One all-gather (with gradient) for the six embeddings, one for the masks. In one
// process both are identities and the local range is every row.
loss::LossOutput step_loss(const model::Embeddings& local, const loss::TripartiteLossOptions& o,
                           dist::Comm& comm) {
  if (!o.gather() || comm.world() == 1) {
    // loss.gather false: negatives from this rank's batch only (the reference's
    // --skip-aggregate); each rank's loss is its own batch's mean, and the gradient
    // all-reduce averages them.
    auto per_rank = o;
    per_rank.local_loss(false).world_size(1);
    return loss::tripartite_loss(local, per_rank);
  }
  std::vector<at::Tensor> parts;
  for (model::Level l : model::kLevels) parts.push_back(local.img[l]);
  for (model::Level l : model::kLevels) parts.push_back(local.txt[l]);
  std::vector<int64_t> widths;
  for (const auto& p : parts) widths.push_back(p.size(1));
  const int64_t rows = local.img[model::Level::kPatient].size(0);
  auto all = dist::all_gather_with_grad(comm, at::cat(parts, 1)).split_with_sizes(widths, 1);
  std::vector<at::Tensor> cols{local.has_left.to(at::kLong), local.has_right.to(at::kLong)};
  const bool ids = local.report_id[model::Level::kPatient].defined();
  if (ids)
    for (model::Level l : model::kLevels) cols.push_back(local.report_id[l].to(at::kLong));
  auto masks = comm.all_gather(at::stack(cols, 1));
  model::Embeddings g = local;
  if (ids)
    for (size_t i = 0; i < model::kLevels.size(); ++i)
      g.report_id[model::kLevels[i]] = masks.select(1, 2 + static_cast<int64_t>(i)).contiguous();
  for (size_t i = 0; i < model::kLevels.size(); ++i) {
    g.img[model::kLevels[i]] = all[i];
    g.txt[model::kLevels[i]] = all[model::kLevels.size() + i];
  }
  g.has_left = masks.select(1, 0).to(at::kBool);
  g.has_right = masks.select(1, 1).to(at::kBool);
  return loss::tripartite_loss(g, o, comm.rank() * rows, (comm.rank() + 1) * rows);
}

namespace {

model::Embeddings run_forward(model::RetClip& net, const MicroBatch& mb, Precision p) {
  AutocastScope scope(p, mb.tokens.device());
  return to_float(net->forward(mb.left, mb.right, mb.tokens, mb.has_left, mb.has_right));
}

// The forward, plus the report ids the loss needs with loss.duplicates: positive.
model::Embeddings forward_for_loss(model::RetClip& net, const MicroBatch& mb, Precision p,
                                   const loss::TripartiteLossOptions& o) {
  model::Embeddings e = run_forward(net, mb, p);
  if (o.duplicates_positive()) e.report_id = level_report_ids(mb);
  return e;
}

// Dropout draws from the default generator of the device: capture it so the
// recompute pass of a micro-batch sees the masks of its cached pass.
at::Tensor rng_state(const at::Device& d) {
  if (d.is_cuda()) return at::detail::getCUDAHooks().getDefaultGenerator(d.index()).get_state();
  return at::detail::getDefaultCPUGenerator().get_state();
}
void set_rng_state(const at::Device& d, const at::Tensor& s) {
  if (d.is_cuda()) {
    at::Generator(at::detail::getCUDAHooks().getDefaultGenerator(d.index())).set_state(s);
    return;
  }
  at::Generator(at::detail::getDefaultCPUGenerator()).set_state(s);
}

StepLosses losses_of(const loss::LossOutput& o) {
  StepLosses s;
  s.total = o.total.detach();
  for (model::Level l : model::kLevels) {
    s.loss[l] = o.level[l].loss.detach();
    s.acc_i2t[l] = o.level[l].acc_i2t;
    s.acc_t2i[l] = o.level[l].acc_t2i;
  }
  return s;
}

at::Tensor cat_rows(const std::vector<model::Embeddings>& parts,
                    const std::function<at::Tensor(const model::Embeddings&)>& field) {
  std::vector<at::Tensor> ts;
  ts.reserve(parts.size());
  for (const auto& p : parts) ts.push_back(field(p));
  return at::cat(ts, 0);
}

// The micro-batches' embeddings as one batch; the logit scales come from `scales`.
model::Embeddings concat(const std::vector<model::Embeddings>& parts,
                         const model::PerLevel<at::Tensor>& scales) {
  model::Embeddings g;
  for (model::Level l : model::kLevels) {
    g.img[l] = cat_rows(parts, [l](const model::Embeddings& e) { return e.img[l]; });
    g.txt[l] = cat_rows(parts, [l](const model::Embeddings& e) { return e.txt[l]; });
  }
  g.has_left = cat_rows(parts, [](const model::Embeddings& e) { return e.has_left; });
  g.has_right = cat_rows(parts, [](const model::Embeddings& e) { return e.has_right; });
  if (parts[0].report_id[model::Level::kPatient].defined())
    for (model::Level l : model::kLevels)
      g.report_id[l] = cat_rows(parts, [l](const model::Embeddings& e) { return e.report_id[l]; });
  g.logit_scale = scales;
  return g;
}

// Waits for the device and returns the milliseconds since `t0` (phase timing only).
double phase_ms(std::chrono::steady_clock::time_point& t0, const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
  const auto now = std::chrono::steady_clock::now();
  const double ms = std::chrono::duration<double, std::milli>(now - t0).count();
  t0 = now;
  return ms;
}

// Backward of one micro-batch; the gradient all-reduce is armed for the last one only.
void backward(const at::Tensor& total, double loss_scale, const StepComm& sc, bool last) {
  sc.grad_sync.arm(last);
  (loss_scale == 1.0 ? total : total * loss_scale).backward();
  if (last) sc.grad_sync.finish();
}

}  // namespace

model::Embeddings forward_no_grad(model::RetClip& net, const MicroBatch& mb, Precision precision) {
  torch::NoGradGuard no_grad;
  return run_forward(net, mb, precision);
}

StepLosses forward_backward(model::RetClip& net, const std::vector<MicroBatch>& micro,
                            const loss::TripartiteLossOptions& options, Precision precision,
                            double loss_scale, const StepComm& sc, StepPhases* phases) {
  RETCLIP_CHECK(!micro.empty(), "forward_backward needs at least one micro-batch");
  const at::Device device = micro[0].tokens.device();
  auto t0 = std::chrono::steady_clock::now();
  if (micro.size() == 1) {
    model::Embeddings e = forward_for_loss(net, micro[0], precision, options);
    loss::LossOutput out = step_loss(e, options, sc.comm);
    if (phases) phases->forward_ms += phase_ms(t0, device);
    backward(out.total, loss_scale, sc, /*last=*/true);
    if (phases) phases->backward_ms += phase_ms(t0, device);
    return losses_of(out);
  }

  // Pass 1: every micro-batch's embeddings without gradient, with its RNG state.
  std::vector<model::Embeddings> cached;
  std::vector<at::Tensor> states;
  {
    torch::NoGradGuard no_grad;
    for (const auto& mb : micro) {
      states.push_back(rng_state(device));
      cached.push_back(forward_for_loss(net, mb, precision, options));
    }
  }
  const at::Tensor after = rng_state(device);

  // Pass 2: recompute micro-batch j with gradient against the cached rest. The logit
  // scales enter every pass's loss; only pass 0 lets their gradient through, so it is
  // counted once, as in a single full-batch pass.
  StepLosses result;
  for (size_t j = 0; j < micro.size(); ++j) {
    set_rng_state(device, states[j]);
    model::Embeddings live = forward_for_loss(net, micro[j], precision, options);
    std::vector<model::Embeddings> parts = cached;
    parts[j] = live;
    model::PerLevel<at::Tensor> scales;
    for (model::Level l : model::kLevels)
      scales[l] = j == 0 ? live.logit_scale[l] : live.logit_scale[l].detach();
    loss::LossOutput out = step_loss(concat(parts, scales), options, sc.comm);
    backward(out.total, loss_scale, sc, j + 1 == micro.size());
    if (j + 1 == micro.size()) result = losses_of(out);
  }
  set_rng_state(device, after);
  if (phases) phases->forward_ms += phase_ms(t0, device);
  return result;
}

StepLosses forward_backward(model::RetClip& net, const std::vector<MicroBatch>& micro,
                            const loss::TripartiteLossOptions& options, Precision precision,
                            double loss_scale) {
  std::shared_ptr<dist::Comm> one = dist::Comm::single();
  dist::GradSync none(one, {}, 0);
  return forward_backward(net, micro, options, precision, loss_scale, {*one, none});
}

// ---- the optimizer half ------------------------------------------------------------

void LossScaler::update(bool finite) {
  if (!enabled) return;
  if (!finite) {
    scale = std::max(1.0, scale / 2);
    good_steps = 0;
  } else if (++good_steps >= 2000) {
    scale *= 2;
    good_steps = 0;
  }
}

namespace {

// Losses and accuracies averaged over ranks (all ranks then take the same decisions:
// skip a non-finite step, log the same numbers); the same all-reduce carries whether any
// rank wants to stop, which it returns.
bool reduce_losses(dist::Comm& comm, StepLosses& l, bool stop_here) {
  std::vector<at::Tensor> parts{l.total.reshape({1})};
  std::vector<double> host;
  for (model::Level lv : model::kLevels) {
    parts.push_back(l.loss[lv].reshape({1}));
    host.push_back(l.acc_i2t[lv]);
    host.push_back(l.acc_t2i[lv]);
  }
  host.push_back(stop_here ? 1.0 : 0.0);
  at::Tensor all = at::cat({at::cat(parts).to(at::kDouble).cpu(), at::tensor(host, at::kDouble)})
                       .to(l.total.device());
  comm.all_reduce_(all);
  all = (all / comm.world()).cpu();
  auto a = all.accessor<double, 1>();
  int i = 0;
  l.total = at::tensor(a[i++], l.total.options());
  for (model::Level lv : model::kLevels) l.loss[lv] = at::tensor(a[i++], l.total.options());
  for (model::Level lv : model::kLevels) {
    l.acc_i2t[lv] = a[i++];
    l.acc_t2i[lv] = a[i++];
  }
  return a[i] > 0;
}

// Every gradient divided by the fp16 loss scale, in one foreach call.
void unscale_grads(const std::vector<at::Tensor>& params, double scale) {
  if (scale == 1.0) return;
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  at::_foreach_div_(grads, at::Scalar(scale));
}

void clamp_logit_scales(model::RetClip& net, double max) {
  torch::NoGradGuard ng;
  for (model::Level l : model::kLevels) net->logit_scale_of(l).clamp_(0, max);
}

}  // namespace

StepContext make_step_context(const config::Config& cfg, model::RetClip net,
                              torch::optim::AdamW& optimizer, std::shared_ptr<dist::Comm> comm) {
  std::vector<at::Tensor> state;
  for (const auto& p : net->parameters()) state.push_back(p.data());
  for (const auto& b : net->buffers()) state.push_back(b);
  comm->broadcast_(state, 0);
  StepContext c;
  c.net = net;
  c.optimizer = &optimizer;
  c.params = optimizer_params(optimizer);
  c.grad_sync = std::make_shared<dist::GradSync>(comm, net->parameters(), cfg.dist.bucket_mb);
  c.comm = std::move(comm);
  c.loss = loss_options(cfg, c.comm->world());
  c.precision = parse_precision(cfg.train.precision);
  c.accum_steps = cfg.optim.accum_steps;
  c.clip_norm = cfg.optim.clip_norm;
  c.logit_scale_max = cfg.loss.logit_scale_max;
  return c;
}

StepUpdate optimizer_update(torch::optim::Optimizer& optimizer,
                            const std::vector<at::Tensor>& params, double loss, double clip_norm,
                            LossScaler& scaler) {
  unscale_grads(params, scaler.factor());
  StepUpdate u;
  u.grad_norm = clip_grad_norm(params, clip_norm);
  u.skipped = !std::isfinite(u.grad_norm) || !std::isfinite(loss);
  if (u.skipped)
    optimizer.zero_grad(true);
  else
    optimizer.step();
  scaler.update(!u.skipped);
  return u;
}

StepResult train_step(StepContext& c, const MicroBatch& batch, double lr, LossScaler& scaler,
                      bool stop_here, StepPhases* phases) {
  set_lr(*c.optimizer, lr);
  c.optimizer->zero_grad(true);
  StepResult r;
  r.losses = forward_backward(c.net, split_batch(batch, c.accum_steps), c.loss, c.precision,
                              scaler.factor(), {*c.comm, *c.grad_sync}, phases);
  auto t0 = std::chrono::steady_clock::now();
  r.stop = reduce_losses(*c.comm, r.losses, stop_here);
  const StepUpdate u =
      optimizer_update(*c.optimizer, c.params, r.losses.total.item<double>(), c.clip_norm, scaler);
  r.grad_norm = u.grad_norm;
  r.skipped = u.skipped;
  if (!r.skipped) clamp_logit_scales(c.net, c.logit_scale_max);
  if (phases) phases->optimizer_ms += phase_ms(t0, batch.tokens.device());
  return r;
}

}  // namespace retclip::train
