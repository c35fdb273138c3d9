// train_step and its parts (see step.hpp): forward_backward for the plain step (k = 1)
// and full-batch-negative accumulation (k > 1), the loss reduction over ranks, the
// fp16 scaler, and the optimizer half of the step.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <functional>

#include "retclip/dist/comm.hpp"
#include "retclip/dist/grad_sync.hpp"
#include "retclip/train/optimizer.hpp"
#include "retclip/train/step.hpp"
#include "retclip/train/task.hpp"
#include "retclip/util/error.hpp"

namespace retclip::train {

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

model::Embeddings to_float(model::Embeddings e) {
  for (model::Level l : model::kLevels)
    for (at::Tensor* t : {&e.img[l], &e.txt[l], &e.logit_scale[l]}) *t = t->to(at::kFloat);
  return e;
}

std::vector<MicroBatch> split_batch(const MicroBatch& b, int64_t k) {
  RETCLIP_CHECK(k >= 1 && k <= b.size(), "cannot split a batch of ", b.size(), " rows into ", k,
                " micro-batches (optim.accum_steps)");
  if (k == 1) return {b};
  std::vector<MicroBatch> out(b.left.chunk(k).size());
  auto split = [&](const at::Tensor& t, at::Tensor MicroBatch::*field) {
    if (!t.defined()) return;
    auto parts = t.chunk(k);
    for (size_t i = 0; i < out.size(); ++i) out[i].*field = parts[i];
  };
  split(b.left, &MicroBatch::left);
  split(b.right, &MicroBatch::right);
  split(b.tokens, &MicroBatch::tokens);
  split(b.has_left, &MicroBatch::has_left);
  split(b.has_right, &MicroBatch::has_right);
  split(b.eye_report_id, &MicroBatch::eye_report_id);
  split(b.targets, &MicroBatch::targets);
  split(b.is_right, &MicroBatch::is_right);
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

}  // namespace

void backward_micro(const at::Tensor& loss, double loss_scale, const StepComm& sc, bool last) {
  sc.grad_sync.arm(last);
  (loss_scale == 1.0 ? loss : loss * loss_scale).backward();
  if (last) sc.grad_sync.finish();
}

StepLosses accumulate_micro_batches(Task& task, const std::vector<MicroBatch>& micro,
                                    double loss_scale, const StepComm& sc, StepPhases* phases) {
  RETCLIP_CHECK(!micro.empty(), "a step needs at least one micro-batch");
  const at::Device device = micro[0].left.device();
  const bool one = micro.size() == 1;
  int64_t rows = 0;
  for (const auto& mb : micro) rows += mb.size();
  auto t0 = std::chrono::steady_clock::now();
  StepLosses sum;
  for (size_t j = 0; j < micro.size(); ++j) {
    const StepLosses l = task.forward_loss(micro[j], sc.comm);
    // One micro-batch keeps its loss as it is (bit for bit the unaccumulated step).
    const at::Tensor loss =
        one ? l.total
            : l.total * (static_cast<double>(micro[j].size()) / static_cast<double>(rows));
    if (phases && one) phases->forward_ms += phase_ms(t0, device);
    backward_micro(loss, loss_scale, sc, j + 1 == micro.size());
    sum.total = sum.total.defined() ? sum.total + loss.detach() : loss.detach();
  }
  if (phases) (one ? phases->backward_ms : phases->forward_ms) += phase_ms(t0, device);
  return sum;
}

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
    backward_micro(out.total, loss_scale, sc, /*last=*/true);
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
    backward_micro(out.total, loss_scale, sc, j + 1 == micro.size());
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
// rank wants to stop, which it returns. Levels the task does not report stay undefined.
// `mean_total` receives the averaged total in double.
bool reduce_losses(dist::Comm& comm, StepLosses& l, bool stop_here, double* mean_total) {
  std::vector<at::Tensor> parts{l.total.reshape({1})};
  std::vector<double> host;
  for (model::Level lv : model::kLevels) {
    if (l.loss[lv].defined()) parts.push_back(l.loss[lv].reshape({1}));
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
  *mean_total = a[i];
  l.total = at::tensor(a[i++], l.total.options());
  for (model::Level lv : model::kLevels)
    if (l.loss[lv].defined()) l.loss[lv] = at::tensor(a[i++], l.total.options());
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

}  // namespace

StepContext make_step_context(std::shared_ptr<Task> task, torch::optim::Optimizer& optimizer,
                              std::shared_ptr<dist::Comm> comm, StepOptions options) {
  torch::nn::Module& module = task->module();
  std::vector<at::Tensor> state;
  for (const auto& p : module.parameters()) state.push_back(p.data());
  for (const auto& b : module.buffers()) state.push_back(b);
  comm->broadcast_(state, 0);
  StepContext c;
  c.task = std::move(task);
  c.optimizer = &optimizer;
  c.params = optimizer_params(optimizer);
  c.grad_sync = std::make_shared<dist::GradSync>(comm, module.parameters(), options.bucket_mb);
  c.comm = std::move(comm);
  c.options = std::move(options);
  return c;
}

StepContext make_step_context(const config::Config& cfg, model::RetClip net,
                              torch::optim::AdamW& optimizer, std::shared_ptr<dist::Comm> comm) {
  auto task = std::make_shared<ContrastiveTask>(net, loss_options(cfg, comm->world()),
                                                cfg.train.precision,
                                                cfg.loss.logit_scale_max);
  StepOptions o;
  o.accum_steps = cfg.optim.accum_steps;
  o.clip_norm = cfg.optim.clip_norm;
  o.bucket_mb = cfg.dist.bucket_mb;
  return make_step_context(std::move(task), optimizer, std::move(comm), o);
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
  if (c.options.lr_scale.empty())
    set_lr(*c.optimizer, lr);
  else
    set_lr(*c.optimizer, lr, c.options.lr_scale);
  c.optimizer->zero_grad(true);
  StepResult r;
  r.losses = c.task->forward_backward(split_batch(batch, c.options.accum_steps), scaler.factor(),
                                      {*c.comm, *c.grad_sync}, phases);
  auto t0 = std::chrono::steady_clock::now();
  r.stop = reduce_losses(*c.comm, r.losses, stop_here, &r.loss);
  const StepUpdate u =
      optimizer_update(*c.optimizer, c.params, r.loss, c.options.clip_norm, scaler);
  r.grad_norm = u.grad_norm;
  r.skipped = u.skipped;
  if (!r.skipped) c.task->after_update();
  if (phases) phases->optimizer_ms += phase_ms(t0, batch.left.device());
  return r;
}

}  // namespace retclip::train
