// The fine-tuned classifier module (see classifier.hpp): its options' names, the head
// and feature mappings, and the forward per level and feature.
#include "retclip/model/classifier.hpp"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "retclip/util/error.hpp"

namespace retclip::model {

int64_t ClassifierOptions::feature_dim() const {
  const bool pre = feature() == ClassifierFeature::kPreProj;
  if (level() == ClassifierLevel::kPatient)
    return pre ? 2 * vision().width() : vision().embed_dim();
  return pre ? vision().width() : vision().embed_dim();
}

ClassifierImpl::ClassifierImpl(const ClassifierOptions& o) : options_(o) {
  RETCLIP_CHECK(o.level() != ClassifierLevel::kAuto,
                "a classifier is eye or patient level; resolve level auto from the labelled set");
  const bool patient = o.level() == ClassifierLevel::kPatient;
  const bool pre = o.feature() == ClassifierFeature::kPreProj;
  RETCLIP_CHECK_USAGE(o.classes() >= 2 || (o.multi_label() && o.classes() >= 1),
                      "a classifier needs at least 2 classes (or 1 label) but got ", o.classes(),
                      ". HINT: check finetune.classes and the label column");
  RETCLIP_CHECK_USAGE(!o.per_eye() || (!patient && !pre),
                      "per-eye heads score eye-level post_proj features but the classifier is ",
                      config::name(o.level()), " level, ", config::name(o.feature()),
                      ". HINT: finetune.level=eye and finetune.feature=post_proj");
  visual = register_module("visual", VisionTransformer(o.vision()));
  const int64_t e = o.vision().embed_dim();
  auto mapping = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  if (patient && !pre)
    global_feature_mapping = register_module("global_feature_mapping", mapping(2 * e, e));
  if (o.per_eye()) {
    left_feature_mapping = register_module("left_feature_mapping", mapping(e, e));
    right_feature_mapping = register_module("right_feature_mapping", mapping(e, e));
  }
  head = register_module(
      "head", torch::nn::Linear(o.feature_dim(), o.per_eye() ? 2 * o.classes() : o.classes()));
  // pre_proj heads never use visual.proj: kept (the export has the whole tower) but not
  // trained, so no optimizer or gradient all-reduce ever sees a parameter without gradient.
  if (pre) visual->proj.set_requires_grad(false);
  // RETFound / timm: trunc_normal_(head.weight, std=2e-5), zero bias, so the first
  // logits are near 0 whatever the tower.
  torch::NoGradGuard ng;
  head->weight.normal_(0.0, 2e-5);
  head->bias.zero_();
}

namespace {

void check_is_right(const at::Tensor& is_right, const at::Tensor& images) {
  TORCH_CHECK(is_right.defined() && is_right.dim() == 1 && is_right.size(0) == images.size(0),
              "a per-eye classifier expected is_right [", images.size(0), "] but got ",
              is_right.defined() ? is_right.sizes() : at::IntArrayRef{});
}

}  // namespace

at::Tensor ClassifierImpl::features(const at::Tensor& left, const at::Tensor& right,
                                    const at::Tensor& has_left, const at::Tensor& has_right,
                                    const at::Tensor& is_right) {
  const bool pre = options_.feature() == ClassifierFeature::kPreProj;
  auto vit = [&](const at::Tensor& x) {
    return pre ? visual->forward_pooled(x) : visual->forward(x);
  };
  // Zero-shot's l2: x / max(|x|, 1e-12).
  auto norm = [&](const at::Tensor& x) {
    return options_.normalize() ? x / x.norm(2, {-1}, true).clamp_min(1e-12) : x;
  };
  if (options_.level() == ClassifierLevel::kEye) {
    at::Tensor f = vit(left);
    if (!options_.per_eye()) return norm(f);
    check_is_right(is_right, left);
    at::Tensor m = is_right.to(f.device(), torch::kBool).unsqueeze(1);
    return norm(
        torch::where(m, right_feature_mapping->forward(f), left_feature_mapping->forward(f)));
  }
  const int64_t b = left.size(0);
  at::Tensor both = vit(torch::cat({left, right}, 0));  // one pass over 2B images
  at::Tensor fl = both.narrow(0, 0, b), fr = both.narrow(0, b, b);
  at::Tensor l = torch::where(has_left.unsqueeze(1), fl, fr);
  at::Tensor r = torch::where(has_right.unsqueeze(1), fr, fl);
  at::Tensor cat = torch::cat({l, r}, 1);
  return norm(pre ? cat : global_feature_mapping->forward(cat));
}

at::Tensor ClassifierImpl::forward(const at::Tensor& left, const at::Tensor& right,
                                   const at::Tensor& has_left, const at::Tensor& has_right,
                                   const at::Tensor& is_right) {
  at::Tensor z = head->forward(features(left, right, has_left, has_right, is_right));
  if (!options_.per_eye()) return z;
  const int64_t c = options_.classes();
  at::Tensor m = is_right.to(z.device(), torch::kBool).unsqueeze(1);
  return torch::where(m, z.narrow(1, c, c), z.narrow(1, 0, c));
}

at::Tensor ClassifierImpl::probabilities(const at::Tensor& logits) const {
  at::Tensor z = logits.to(torch::kFloat);
  return options_.multi_label() ? torch::sigmoid(z) : torch::softmax(z, 1);
}

}  // namespace retclip::model
