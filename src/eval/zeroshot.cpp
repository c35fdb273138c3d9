// Zero-shot scoring with averaged prompt embeddings per class and the level's text head.
#include "retclip/eval/zeroshot.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include "retclip/data/tokenizer.hpp"
#include "retclip/util/error.hpp"

namespace retclip::eval {

PromptSet load_prompts(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    throw UsageError(
        str_cat("cannot read prompt file '", path, "': ", e.what(), ". HINT: check --prompts"));
  }
  PromptSet p;
  p.source = path;
  const YAML::Node classes = root["classes"];
  RETCLIP_CHECK_USAGE(classes && classes.IsSequence() && classes.size() >= 2, path,
                      ": expected `classes:` a list of at least 2 {name, prompts} entries. HINT: "
                      "see configs/prompts/synth-findings.yaml");
  for (size_t i = 0; i < classes.size(); ++i) {
    const YAML::Node c = classes[i];
    RETCLIP_CHECK_USAGE(
        c["name"] && c["prompts"] && c["prompts"].IsSequence() && c["prompts"].size() > 0, path,
        ": classes[", i, "] needs `name` and a non-empty `prompts` list");
    p.classes.push_back(c["name"].as<std::string>());
    std::vector<std::string> ps;
    for (const auto& t : c["prompts"]) ps.push_back(t.as<std::string>());
    p.prompts.push_back(ps);
  }
  return p;
}

namespace {

at::Tensor l2(const at::Tensor& x) {
  return x / x.norm(2, {-1}, true).clamp_min(1e-12);
}

}  // namespace

ClassEmbeddings class_embeddings(Encoder& enc, const PromptSet& prompts, const at::Device& device) {
  RETCLIP_CHECK_USAGE(enc.has_text, enc.source,
                      " has no text tower. HINT: export with --parts full");
  RETCLIP_CHECK_USAGE(!enc.tokenizer_path.empty(), enc.source,
                      " has a text tower but names no tokenizer file. HINT: export again with "
                      "`retclip export --checkpoint RUN --out DIR --tokenizer PATH` (the "
                      "vocab.txt or .model of the run)");
  const auto& dc = enc.cfg.data;
  auto tok = data::load_tokenizer(dc.tokenizer.type, enc.tokenizer_path, dc.tokenizer.lowercase);
  torch::NoGradGuard ng;
  enc.net->to(device);
  enc.net->eval();
  model::PerLevel<std::vector<at::Tensor>> rows;
  for (const auto& ps : prompts.prompts) {
    std::vector<at::Tensor> toks;
    for (const auto& p : ps)
      toks.push_back(torch::tensor(tok->encode(p, dc.context_length), torch::kLong));
    model::TextFeatures tf = enc.net->encode_text(torch::stack(toks).to(device));
    rows[model::Level::kPatient].push_back(l2(l2(tf.patient).mean(0)));
    rows[model::Level::kLeft].push_back(l2(l2(tf.left).mean(0)));
    rows[model::Level::kRight].push_back(l2(l2(tf.right).mean(0)));
  }
  ClassEmbeddings out;
  for (model::Level l : model::kLevels) {
    out.text[l] = torch::stack(rows[l]).cpu().to(torch::kFloat);
    out.scale[l] = enc.net->logit_scale_of(l).exp().item<double>();
  }
  return out;
}

ZeroShotResult run_zeroshot(Encoder& enc, const data::LabelledSet& set, const PromptSet& prompts,
                            const ZeroShotOptions& o) {
  RETCLIP_CHECK_USAGE(set.classes == prompts.classes, set.source, " has classes [",
                      fmt::format("{}", fmt::join(set.classes, ",")), "] but ", prompts.source,
                      " has [", fmt::format("{}", fmt::join(prompts.classes, ",")),
                      "]. HINT: the prompt file's class order is the label order; pass the same "
                      "--classes");
  const bool eye = set.level == config::Level::kEye;
  for (const auto& it : set.items)
    RETCLIP_CHECK_USAGE(!(eye && it.eye == data::Eye::kUnknown), it.origin,
                        ": zero-shot at eye level needs the eye's laterality (left or right text "
                        "head). HINT: use a manifest with left_label/right_label columns");
  std::vector<int64_t> rows = set.indices("test");
  if (rows.empty())
    for (size_t i = 0; i < set.items.size(); ++i) rows.push_back(static_cast<int64_t>(i));
  std::vector<int64_t> val = set.indices("val");

  torch::NoGradGuard ng;
  const ClassEmbeddings emb = class_embeddings(enc, prompts, pick_device(o.features.device));
  const at::Tensor &tp = emb.text[model::Level::kPatient], &tl = emb.text[model::Level::kLeft],
                   &tr = emb.text[model::Level::kRight];

  std::vector<int64_t> all = rows;
  all.insert(all.end(), val.begin(), val.end());
  std::vector<data::LabelledItem> items;
  for (int64_t i : all) items.push_back(set.items[i]);
  FeatureOptions fo = o.features;
  fo.level = set.level;
  fo.feature = config::Feature::kPostProj;
  fo.mapping = eye;
  Features f = extract_features(enc, items, fo);
  RETCLIP_CHECK_USAGE(f.missing.empty() || fo.policy == data::BadSamplePolicy::kSkip,
                      "images could not be loaded");
  std::map<std::string, int64_t> row_of;
  for (size_t i = 0; i < f.ids.size(); ++i) row_of[f.ids[i]] = static_cast<int64_t>(i);
  at::Tensor img = l2(f.x.to(torch::kFloat));
  const double scale_p = emb.scale[model::Level::kPatient];
  const double scale_l = emb.scale[model::Level::kLeft];
  const double scale_r = emb.scale[model::Level::kRight];
  auto score_rows = [&](const std::vector<int64_t>& idx, at::Tensor* y) {
    std::vector<at::Tensor> out, lab;
    for (int64_t i : idx) {
      const auto& it = set.items[i];
      auto r = row_of.find(it.id);
      if (r == row_of.end()) continue;
      at::Tensor head = !eye ? tp : it.eye == data::Eye::kRight ? tr : tl;
      const double s = !eye ? scale_p : it.eye == data::Eye::kRight ? scale_r : scale_l;
      at::Tensor cos = torch::matmul(img[r->second], head.t());  // [C]
      out.push_back(set.multi_label ? cos : torch::softmax(s * cos, 0));
      lab.push_back(set.multi_label ? torch::tensor(it.target, torch::kFloat)
                                    : torch::tensor(it.label, torch::kLong));
    }
    RETCLIP_CHECK_USAGE(!out.empty(), "no item to score in ", set.source);
    *y = torch::stack(lab);
    return torch::stack(out);
  };
  ZeroShotResult res;
  at::Tensor y;
  res.scores = score_rows(rows, &y);
  nlohmann::json j;
  j["protocol"] = "zero-shot";
  j["level"] = config::name(set.level);
  j["task"] = set.multi_label ? "multi-label" : "single-label";
  j["classes"] = set.classes;
  j["prompts"] = prompts.source;
  j["n"] = res.scores.size(0);
  j["split"] = set.indices("test").empty() ? "all" : "test";
  j["split_ids_hash"] = set.split_hash(set.indices("test").empty() ? "" : "test");
  if (set.multi_label) {
    std::vector<double> th(set.classes.size(), 0.0);
    if (!val.empty()) {
      at::Tensor vy;
      at::Tensor vs = score_rows(val, &vy);
      th = tune_f1_thresholds(vs, vy);
    }
    res.multi = multi_label_metrics(res.scores, y, th);
    j["metrics"] = to_json(res.multi, set.classes);
    if (o.bootstrap.rounds > 0) res.ci = multi_label_bootstrap(res.scores, y, th, o.bootstrap);
  } else {
    res.single = single_label_metrics(res.scores, y);
    j["metrics"] = to_json(res.single, set.classes);
    if (o.bootstrap.rounds > 0) res.ci = single_label_bootstrap(res.scores, y, o.bootstrap);
  }
  if (!res.ci.empty()) j["ci95"] = to_json(res.ci);
  res.json = j.dump(2);
  auto sc = set.multi_label ? res.multi.scalars() : res.single.scalars();
  res.summary = fmt::format("zero-shot ({}, {} level, {} rows):\n", j["task"].get<std::string>(),
                            config::name(set.level), res.scores.size(0));
  for (const auto& [k, v] : sc) {
    res.summary += fmt::format("  {:<18} {:.4f}", k, v);
    auto ci = res.ci.find(k);
    if (ci != res.ci.end())
      res.summary += fmt::format("  (95% CI {:.4f}-{:.4f})", ci->second.lo, ci->second.hi);
    res.summary += "\n";
  }
  return res;
}

}  // namespace retclip::eval
