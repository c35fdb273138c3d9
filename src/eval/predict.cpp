// A fine-tuned classifier outside training (see predict.hpp): the inference loop, the
// prediction CSV, the export and `retclip predict`.
#include "retclip/eval/predict.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include "retclip/data/loader.hpp"
#include "retclip/data/manifest.hpp"
#include "retclip/eval/features.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/log.hpp"
#include "retclip/util/progress.hpp"

namespace retclip::eval {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The first sighting of each item in `b` (the last batch repeats earlier items as
// padding): its row of `p` and, when asked, of the batch's inputs.
int64_t keep_first(const data::Batch& b, const at::Tensor& p, bool inputs,
                   std::vector<std::array<at::Tensor, 5>>& rows) {
  int64_t fresh = 0;
  for (size_t j = 0; j < b.indices.size(); ++j) {
    auto& row = rows[static_cast<size_t>(b.indices[j])];
    if (row[0].defined()) continue;
    ++fresh;
    const auto k = static_cast<int64_t>(j);
    row[0] = p[k];
    if (inputs) row = {p[k], b.left[k], b.right[k], b.has_left[k], b.has_right[k]};
  }
  return fresh;
}

at::Tensor stack_column(const std::vector<std::array<at::Tensor, 5>>& rows, size_t c) {
  std::vector<at::Tensor> col;
  col.reserve(rows.size());
  for (const auto& r : rows) col.push_back(r[c]);
  return torch::stack(col);
}

}  // namespace

at::Tensor right_eye_rows(const std::vector<data::LabelledItem>& items,
                          const std::vector<int64_t>& indices) {
  std::vector<uint8_t> r;
  r.reserve(indices.size());
  for (int64_t i : indices) r.push_back(items[static_cast<size_t>(i)].eye == data::Eye::kRight);
  return at::tensor(r, at::kByte).to(at::kBool);
}

Classified classify_items(model::Classifier& net, const std::vector<data::LabelledItem>& items,
                          const InferenceOptions& o) {
  RETCLIP_CHECK_USAGE(!items.empty(), "no items to classify");
  const auto level = net->options().level();
  const auto& dc = o.data;
  data::Loader loader(
      make_item_source(items, level, dc.image_size, dc.context_length, dc.max_image_pixels,
                       dc.preprocess),
      nullptr,
      inference_loader_options(dc, o.batch_size, o.workers, o.device,
                               data::BadSamplePolicy::kFail));
  const bool was_training = net->is_training();
  net->eval();
  torch::NoGradGuard ng;
  std::vector<std::array<at::Tensor, 5>> rows(items.size());
  Classified out;
  std::unique_ptr<util::Progress> bar;
  if (!o.progress.empty())
    bar = std::make_unique<util::Progress>(
        o.progress, static_cast<int64_t>(items.size()),
        level == model::ClassifierLevel::kEye ? "images" : "patients");
  while (auto b = loader.next()) {
    at::Tensor logits;
    {
      model::AutocastScope scope(o.precision, o.device);
      logits = net->forward(b->left.to(o.device), b->right.to(o.device), b->has_left.to(o.device),
                            b->has_right.to(o.device), right_eye_rows(items, b->indices));
    }
    const int64_t fresh =
        keep_first(*b, net->probabilities(logits).to(torch::kCPU), o.keep_inputs, rows);
    if (bar) bar->advance(fresh);
  }
  if (bar) bar->finish();
  if (was_training) net->train();
  out.probs = stack_column(rows, 0);
  if (o.keep_inputs) {
    out.left = stack_column(rows, 1);
    out.right = stack_column(rows, 2);
    out.has_left = stack_column(rows, 3);
    out.has_right = stack_column(rows, 4);
  }
  return out;
}

std::string predictions_csv(const std::vector<data::LabelledItem>& items, const at::Tensor& probs,
                            const std::vector<std::string>& classes, const std::string& prob_prefix,
                            const at::Tensor& targets) {
  std::string csv = "id,patient_id,eye";
  for (const auto& c : classes) csv += "," + prob_prefix + c;
  if (targets.defined())
    for (const auto& c : classes) csv += ",true_" + c;
  csv += "\n";
  auto p = probs.accessor<float, 2>();
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    const auto r = static_cast<int64_t>(i);
    csv += fmt::format("{},{},{}", it.id, it.patient_id, data::eye_name(it.eye));
    for (int64_t k = 0; k < p.size(1); ++k) csv += fmt::format(",{:.9g}", p[r][k]);
    if (targets.defined()) {
      auto t = targets.accessor<float, 2>();
      for (int64_t k = 0; k < t.size(1); ++k) csv += fmt::format(",{:g}", t[r][k]);
    }
    csv += "\n";
  }
  return csv;
}

// ---- export ------------------------------------------------------------------------

namespace {
constexpr const char* kWeightsFile = "classifier.safetensors";
constexpr const char* kFormat = "retclip-classifier";

// A name the sidecar records, as the enum E; `key` names it in the error.
template <class E>
E sidecar_name(const json& j, const std::string& key, const fs::path& side) {
  const std::string s = j.get<std::string>();
  E e{};
  if (!config::from_name(s, e)) config::throw_unknown_name(side.string() + ": " + key, s, config::names<E>());
  return e;
}

// The tower's architecture options (CLIP's when a sidecar predates them).
model::ClassifierOptions options_from_sidecar(const json& m, const fs::path& side) {
  return model::ClassifierOptions(io::vision_architecture_from_json(m, side.string() + ": model"),
                                  m.at("classes").get<int64_t>())
      .multi_label(m.at("multi_label").get<bool>())
      .level(sidecar_name<model::ClassifierLevel>(m.at("level"), "model.level", side))
      .feature(sidecar_name<model::ClassifierFeature>(m.at("feature"), "model.feature", side))
      .normalize(m.value("normalize", false))  // absent in exports without zero-shot heads
      .per_eye(m.value("per_eye", false));
}

}  // namespace

void save_classifier(const fs::path& dir, model::Classifier& net, json side) {
  fs::create_directories(dir);
  const auto& o = net->options();
  side["format"] = kFormat;
  side["file"] = kWeightsFile;
  json model = io::vision_architecture_json(o.vision());
  model.update({{"classes", o.classes()},
                {"multi_label", o.multi_label()},
                {"level", config::name(o.level())},
                {"feature", config::name(o.feature())},
                {"normalize", o.normalize()},
                {"per_eye", o.per_eye()}});
  side["model"] = model;
  io::save_weights(dir / kWeightsFile, io::module_state_dict(*net), {{"format", kFormat}});
  util::write_file_atomic(dir / "retclip.json", side.dump(2));
}

LoadedClassifier load_classifier(const fs::path& dir) {
  const fs::path side_path = dir / "retclip.json";
  RETCLIP_CHECK_USAGE(fs::exists(side_path), dir.string(),
                      " has no retclip.json. HINT: --weights takes the classifier directory "
                      "that retclip finetune writes (<log.dir>/classifier)");
  LoadedClassifier out;
  out.sidecar = json::parse(util::read_file(side_path));
  RETCLIP_CHECK_USAGE(out.sidecar.value("format", "") == kFormat, side_path.string(),
                      " is not a fine-tuned classifier (format '", out.sidecar.value("format", ""),
                      "'). HINT: retclip predict takes <log.dir>/classifier of retclip finetune");
  try {
    out.net = model::Classifier(options_from_sidecar(out.sidecar.at("model"), side_path));
    out.classes = out.sidecar.at("classes").get<std::vector<std::string>>();
    const auto& pre = out.sidecar.at("preprocessing");
    out.image_size = pre.at("image_size").get<int64_t>();
    if (pre.contains("preprocess"))  // absent in older exports: fundus_crop
      out.preprocess = sidecar_name<config::Preprocess>(pre.at("preprocess"), "preprocessing.preprocess", side_path);
    out.mean = pre.at("mean").get<std::array<double, 3>>();
    out.std = pre.at("std").get<std::array<double, 3>>();
    if (out.sidecar.contains("precision"))  // absent in older exports: auto
      out.precision = sidecar_name<model::Precision>(out.sidecar.at("precision"), "precision", side_path);
  } catch (const json::exception& e) {
    throw UsageError(str_cat(side_path.string(), ": incomplete classifier sidecar (", e.what(),
                             "). HINT: re-export with retclip finetune"));
  }
  io::apply_state_dict(*out.net, io::load_weights(dir / kWeightsFile), /*strict=*/true);
  out.net->eval();
  return out;
}

InferenceOptions LoadedClassifier::inference_options(const at::Device& device) const {
  InferenceOptions o;
  o.data.image_size = image_size;
  o.data.context_length = 4;  // token rows are unused: only the image tower runs
  o.data.preprocess = preprocess;
  o.data.mean = mean;
  o.data.std = std;
  o.data.max_image_pixels = data::kDefaultMaxImagePixels;
  o.device = device;
  o.precision = model::resolve_precision(precision, device);
  return o;
}

// ---- retclip predict ---------------------------------------------------------------

namespace {

// The items of a manifest's rows: one per present eye at eye level, one per patient.
std::vector<data::LabelledItem> manifest_items(const std::vector<data::Sample>& samples,
                                               model::ClassifierLevel level) {
  std::vector<data::LabelledItem> items;
  for (const auto& s : samples) {
    data::LabelledItem it;
    it.patient_id = s.patient_id;
    it.origin = s.origin;
    if (level == model::ClassifierLevel::kPatient) {
      it.id = s.patient_id;
      it.eye = data::Eye::kBoth;
      it.left = s.left;
      it.right = s.right;
      items.push_back(it);
      continue;
    }
    for (data::Eye e : {data::Eye::kLeft, data::Eye::kRight}) {
      const data::ImageRef& ref = e == data::Eye::kLeft ? s.left : s.right;
      if (!ref.present()) continue;
      data::LabelledItem one = it;
      one.id = s.patient_id + ":" + data::eye_name(e);
      one.eye = e;
      (e == data::Eye::kLeft ? one.left : one.right) = ref;
      items.push_back(one);
    }
  }
  return items;
}

void save_inputs(const std::string& path, const std::vector<data::LabelledItem>& items,
                 const Classified& r, model::ClassifierLevel level) {
  io::StateDict sd{{"probabilities", r.probs}, {"left", r.left}};
  if (level == model::ClassifierLevel::kPatient) {
    sd.emplace_back("right", r.right);
    sd.emplace_back("has_left", r.has_left.to(torch::kUInt8));
    sd.emplace_back("has_right", r.has_right.to(torch::kUInt8));
  }
  std::vector<std::string> ids;
  for (const auto& it : items) ids.push_back(it.id);
  io::save_weights(path, sd, {{"ids", json(ids).dump()}});
}

}  // namespace

int64_t predict_manifest(const PredictOptions& o) {
  LoadedClassifier c = load_classifier(o.weights);
  const auto level = c.net->options().level();
  auto samples =
      data::read_samples(o.manifest, "auto", o.split, data::BadSamplePolicy::kFail, nullptr);
  RETCLIP_CHECK_USAGE(!samples.empty(), "no rows in ", o.manifest,
                      o.split.empty() ? "" : " of split " + o.split, ". HINT: check --manifest");
  const std::vector<data::LabelledItem> items = manifest_items(samples, level);
  const at::Device device = pick_device(o.device);
  c.net->to(device);
  InferenceOptions io = c.inference_options(device);
  io.batch_size = o.batch_size;
  io.workers = o.workers;
  io.progress = "predict";
  io.keep_inputs = !o.save_inputs.empty();
  const Classified r = classify_items(c.net, items, io);
  util::write_file_atomic(o.out, predictions_csv(items, r.probs, c.classes, ""));
  if (!o.save_inputs.empty()) save_inputs(o.save_inputs, items, r, level);
  log::info("predict: {} {} from {} -> {}", items.size(),
            level == model::ClassifierLevel::kEye ? "images" : "patients", o.manifest, o.out);
  return static_cast<int64_t>(items.size());
}

}  // namespace retclip::eval
