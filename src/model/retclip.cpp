// RET-CLIP heads over the two towers: per-eye and patient image mappings, three text
// projections, three logit scales. Missing eyes: the ViT runs only on present eyes and
// the patient feature substitutes the present eye's feature for the missing one.
#include "retclip/model/retclip.hpp"

#include <ATen/ATen.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/modules/activation.h>

#include <cmath>

#include "retclip/util/error.hpp"

namespace retclip::model {
namespace {

torch::nn::Sequential make_projection(int64_t hidden, int64_t embed) {
  return torch::nn::Sequential(torch::nn::Linear(hidden, hidden), torch::nn::ReLU(),
                               torch::nn::Linear(hidden, embed));
}

torch::Tensor l2_normalize(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::normalize(x, F::NormalizeFuncOptions().p(2).dim(-1).eps(1e-12));
}

torch::Tensor mask_or_all(const torch::Tensor& mask, int64_t b, const torch::Device& device,
                          const char* what) {
  if (!mask.defined()) return torch::ones({b}, torch::dtype(torch::kBool).device(device));
  RETCLIP_CHECK(mask.dim() == 1 && mask.size(0) == b, "expected ", what, " [", b, "] but got ",
                mask.sizes());
  return mask.to(device, torch::kBool);
}

}  // namespace

RetClipImpl::RetClipImpl(const RetClipOptions& options) : options_(options) {
  const auto& o = options_;
  RETCLIP_CHECK_USAGE(o.embed_dim() == o.vision().embed_dim(), "expected the joint embed_dim (",
                      o.embed_dim(), ") to equal the ViT's embed_dim (", o.vision().embed_dim(),
                      ") (key model.embed_dim)");
  const int64_t e = o.embed_dim(), h = o.text().hidden();
  visual = register_module("visual", VisionTransformer(o.vision()));
  bert = register_module("bert", BertEncoder(o.text()));
  text_projection = register_module("text_projection", make_projection(h, e));
  text_projection_left = register_module("text_projection_left", make_projection(h, e));
  text_projection_right = register_module("text_projection_right", make_projection(h, e));
  global_feature_mapping = register_module(
      "global_feature_mapping", torch::nn::Linear(torch::nn::LinearOptions(2 * e, e).bias(false)));
  left_feature_mapping = register_module(
      "left_feature_mapping", torch::nn::Linear(torch::nn::LinearOptions(e, e).bias(false)));
  right_feature_mapping = register_module(
      "right_feature_mapping", torch::nn::Linear(torch::nn::LinearOptions(e, e).bias(false)));
  logit_scale = register_parameter("logit_scale", torch::empty({}));
  logit_scale_left = register_parameter("logit_scale_left", torch::empty({}));
  logit_scale_right = register_parameter("logit_scale_right", torch::empty({}));
  reset_parameters();
}

void RetClipImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  visual->reset_parameters();
  bert->reset_parameters();
  const double std = std::pow(static_cast<double>(options_.text().hidden()), -0.5);
  for (auto* seq : {&text_projection, &text_projection_left, &text_projection_right}) {
    for (size_t i : {0, 2}) {
      auto lin = (*seq)[i]->as<torch::nn::LinearImpl>();
      lin->reset_parameters();  // bias: nn.Linear's default, as the reference
      lin->weight.normal_(0.0, std);
    }
  }
  for (auto* lin : {&global_feature_mapping, &left_feature_mapping, &right_feature_mapping})
    (*lin)->reset_parameters();
  for (auto* s : {&logit_scale, &logit_scale_left, &logit_scale_right})
    s->fill_(options_.logit_scale_init());
}

torch::Tensor RetClipImpl::encode_image(const torch::Tensor& images) {
  return visual->forward(images);
}

TextFeatures RetClipImpl::encode_text(const torch::Tensor& tokens) {
  auto cls = bert->forward(tokens);  // [B, H]
  return {text_projection->forward(cls), text_projection_left->forward(cls),
          text_projection_right->forward(cls)};
}

ImageFeatures RetClipImpl::encode_eyes(const torch::Tensor& left, const torch::Tensor& right,
                                       const torch::Tensor& has_left,
                                       const torch::Tensor& has_right) {
  RETCLIP_CHECK(left.dim() == 4 && right.sizes() == left.sizes(),
                "expected left and right images of equal shape [B, 3, S, S] but got ", left.sizes(),
                " and ", right.sizes());
  const int64_t b = left.size(0);
  auto hl = mask_or_all(has_left, b, left.device(), "has_left");
  auto hr = mask_or_all(has_right, b, left.device(), "has_right");
  RETCLIP_CHECK(hl.logical_or(hr).all().item<bool>(),
                "expected every patient to have at least one eye but a row has neither "
                "(has_left and has_right both false). HINT: the loader must drop such rows");
  auto il = hl.nonzero().view(-1), ir = hr.nonzero().view(-1);
  const int64_t nl = il.size(0), nr = ir.size(0);
  if (nl == b && nr == b) {  // common case: one ViT call over both eyes
    // split (not two slices): its backward concatenates the two gradients in one op.
    auto f = visual->forward(torch::cat({left, right}, 0)).split(b, 0);
    return {f[0], f[1]};
  }
  auto f = visual->forward(torch::cat({left.index_select(0, il), right.index_select(0, ir)}, 0));
  auto zeros = torch::zeros({b, f.size(1)}, f.options());
  return {zeros.index_copy(0, il, f.slice(0, 0, nl)),
          zeros.index_copy(0, ir, f.slice(0, nl, nl + nr))};
}

torch::Tensor Embeddings::valid(Level level) const {
  if (level == Level::kLeft) return has_left;
  if (level == Level::kRight) return has_right;
  return {};
}

torch::Tensor RetClipImpl::logit_scale_of(Level level) const {
  if (level == Level::kLeft) return logit_scale_left;
  if (level == Level::kRight) return logit_scale_right;
  return logit_scale;
}

Embeddings RetClipImpl::forward(const torch::Tensor& left, const torch::Tensor& right,
                                const torch::Tensor& tokens, const torch::Tensor& has_left,
                                const torch::Tensor& has_right) {
  const int64_t b = left.size(0);
  RETCLIP_CHECK(tokens.dim() == 2 && tokens.size(0) == b, "expected tokens [", b,
                ", T] (one text per patient) but got ", tokens.sizes());
  auto hl = mask_or_all(has_left, b, left.device(), "has_left");
  auto hr = mask_or_all(has_right, b, left.device(), "has_right");
  auto img = encode_eyes(left, right, hl, hr);
  // Missing eye: the patient mapping sees the present eye twice.
  const bool all_present = hl.logical_and(hr).all().item<bool>();
  auto l_sub = all_present ? img.left : torch::where(hl.unsqueeze(1), img.left, img.right);
  auto r_sub = all_present ? img.right : torch::where(hr.unsqueeze(1), img.right, img.left);
  auto txt = encode_text(tokens);
  Embeddings e;
  e.img[Level::kPatient] =
      l2_normalize(global_feature_mapping->forward(torch::cat({l_sub, r_sub}, 1)));
  e.img[Level::kLeft] = l2_normalize(left_feature_mapping->forward(img.left));  // zero rows stay zero
  e.img[Level::kRight] = l2_normalize(right_feature_mapping->forward(img.right));
  e.txt[Level::kPatient] = l2_normalize(txt.patient);
  e.txt[Level::kLeft] = l2_normalize(txt.left);
  e.txt[Level::kRight] = l2_normalize(txt.right);
  for (Level l : kLevels) e.logit_scale[l] = logit_scale_of(l);
  e.has_left = hl;
  e.has_right = hr;
  return e;
}

void RetClipImpl::set_grad_checkpointing(bool enabled) {
  options_.vision().grad_checkpointing(enabled);
  options_.text().grad_checkpointing(enabled);
  visual->set_grad_checkpointing(enabled);
  bert->set_grad_checkpointing(enabled);
}

void RetClipImpl::pretty_print(std::ostream& stream) const {
  stream << "retclip::model::RetClip(embed_dim=" << options_.embed_dim() << ")";
}

}  // namespace retclip::model
