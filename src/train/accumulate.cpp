// forward_backward: plain step (k = 1) and full-batch-negative accumulation (k > 1).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "retclip/dist/comm.hpp"
#include "retclip/dist/grad_sync.hpp"
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
      .world_size(world);
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
  for (at::Tensor* t : {&e.patient_img, &e.left_img, &e.right_img, &e.patient_txt, &e.left_txt,
                        &e.right_txt, &e.logit_scale, &e.logit_scale_left, &e.logit_scale_right})
    *t = t->to(at::kFloat);
  return e;
}

std::vector<MicroBatch> split_batch(const MicroBatch& b, int64_t k) {
  RETCLIP_CHECK(k >= 1 && k <= b.size(), "cannot split a batch of ", b.size(), " patients into ",
                k, " micro-batches (optim.accum_steps)");
  if (k == 1) return {b};
  auto l = b.left.chunk(k), r = b.right.chunk(k), t = b.tokens.chunk(k),
       hl = b.has_left.chunk(k), hr = b.has_right.chunk(k);
  std::vector<MicroBatch> out;
  for (size_t i = 0; i < t.size(); ++i) out.push_back({l[i], r[i], t[i], hl[i], hr[i]});
  return out;
}

// One all-gather (with gradient) for the six embeddings, one for the masks.
loss::LossOutput step_loss(const model::Embeddings& local, const loss::TripartiteLossOptions& o,
                           const StepComm& sc) {
  if (sc.comm == nullptr || sc.comm->world() == 1) return loss::tripartite_loss(local, o);
  dist::Comm& comm = *sc.comm;
  const std::vector<at::Tensor> parts{local.patient_img, local.left_img, local.right_img,
                                      local.patient_txt, local.left_txt,  local.right_txt};
  std::vector<int64_t> widths;
  for (const auto& p : parts) widths.push_back(p.size(1));
  const int64_t rows = local.patient_img.size(0);
  auto all = dist::all_gather_with_grad(comm, at::cat(parts, 1)).split_with_sizes(widths, 1);
  auto masks = comm.all_gather(at::stack({local.has_left.to(at::kByte),
                                          local.has_right.to(at::kByte)}, 1));
  model::Embeddings g = local;
  g.patient_img = all[0];
  g.left_img = all[1];
  g.right_img = all[2];
  g.patient_txt = all[3];
  g.left_txt = all[4];
  g.right_txt = all[5];
  g.has_left = masks.select(1, 0).to(at::kBool);
  g.has_right = masks.select(1, 1).to(at::kBool);
  return loss::tripartite_loss(g, o, comm.rank() * rows, (comm.rank() + 1) * rows);
}

namespace {

model::Embeddings run_forward(model::RetClip& net, const MicroBatch& mb, Precision p) {
  AutocastScope scope(p, mb.tokens.device());
  return to_float(net->forward(mb.left, mb.right, mb.tokens, mb.has_left, mb.has_right));
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
  s.patient = o.patient.detach();
  s.left = o.left.detach();
  s.right = o.right.detach();
  s.acc_patient_i2t = o.acc_patient_i2t;
  s.acc_patient_t2i = o.acc_patient_t2i;
  s.acc_left_i2t = o.acc_left_i2t;
  s.acc_left_t2i = o.acc_left_t2i;
  s.acc_right_i2t = o.acc_right_i2t;
  s.acc_right_t2i = o.acc_right_t2i;
  return s;
}

at::Tensor cat_field(const std::vector<model::Embeddings>& parts, at::Tensor model::Embeddings::*f) {
  std::vector<at::Tensor> ts;
  ts.reserve(parts.size());
  for (const auto& p : parts) ts.push_back(p.*f);
  return at::cat(ts, 0);
}

// Backward of one micro-batch; the gradient all-reduce is armed for the last one only.
void backward(const at::Tensor& total, double loss_scale, const StepComm& sc, bool last) {
  if (sc.grad_sync) sc.grad_sync->arm(last);
  (loss_scale == 1.0 ? total : total * loss_scale).backward();
  if (sc.grad_sync && last) sc.grad_sync->finish();
}

}  // namespace

model::Embeddings forward_no_grad(model::RetClip& net, const MicroBatch& mb, Precision precision) {
  torch::NoGradGuard no_grad;
  return run_forward(net, mb, precision);
}

StepLosses forward_backward(model::RetClip& net, const std::vector<MicroBatch>& micro,
                            const loss::TripartiteLossOptions& options, Precision precision,
                            double loss_scale, const StepComm& sc) {
  RETCLIP_CHECK(!micro.empty(), "forward_backward needs at least one micro-batch");
  const at::Device device = micro[0].tokens.device();
  if (micro.size() == 1) {
    model::Embeddings e = run_forward(net, micro[0], precision);
    loss::LossOutput out = step_loss(e, options, sc);
    backward(out.total, loss_scale, sc, /*last=*/true);
    return losses_of(out);
  }

  // Pass 1: every micro-batch's embeddings without gradient, with its RNG state.
  std::vector<model::Embeddings> cached;
  std::vector<at::Tensor> states;
  {
    torch::NoGradGuard no_grad;
    for (const auto& mb : micro) {
      states.push_back(rng_state(device));
      cached.push_back(run_forward(net, mb, precision));
    }
  }
  const at::Tensor after = rng_state(device);

  // Pass 2: recompute micro-batch j with gradient against the cached rest. The logit
  // scales enter every pass's loss; only pass 0 lets their gradient through, so it is
  // counted once, as in a single full-batch pass.
  StepLosses result;
  for (size_t j = 0; j < micro.size(); ++j) {
    set_rng_state(device, states[j]);
    model::Embeddings live = run_forward(net, micro[j], precision);
    std::vector<model::Embeddings> parts = cached;
    parts[j] = live;
    model::Embeddings g;
    g.patient_img = cat_field(parts, &model::Embeddings::patient_img);
    g.left_img = cat_field(parts, &model::Embeddings::left_img);
    g.right_img = cat_field(parts, &model::Embeddings::right_img);
    g.patient_txt = cat_field(parts, &model::Embeddings::patient_txt);
    g.left_txt = cat_field(parts, &model::Embeddings::left_txt);
    g.right_txt = cat_field(parts, &model::Embeddings::right_txt);
    g.has_left = cat_field(parts, &model::Embeddings::has_left);
    g.has_right = cat_field(parts, &model::Embeddings::has_right);
    g.logit_scale = j == 0 ? live.logit_scale : live.logit_scale.detach();
    g.logit_scale_left = j == 0 ? live.logit_scale_left : live.logit_scale_left.detach();
    g.logit_scale_right = j == 0 ? live.logit_scale_right : live.logit_scale_right.detach();
    loss::LossOutput out = step_loss(g, options, sc);
    backward(out.total, loss_scale, sc, j + 1 == micro.size());
    if (j + 1 == micro.size()) result = losses_of(out);
  }
  set_rng_state(device, after);
  return result;
}

}  // namespace retclip::train
