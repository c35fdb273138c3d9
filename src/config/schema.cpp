// The key table of config.hpp (names and order are the YAML keys and their order in
// to_yaml) plus the strict scalar parsers and "did you mean" helpers it is read with.
#include "schema.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <type_traits>

namespace retclip::config::detail {

namespace {

Field leaf(const char* name, int64_t& v) {
  return {name, Kind::kInt, &v, 0, nullptr, {}, {}};
}
Field leaf(const char* name, uint64_t& v) {
  return {name, Kind::kUInt, &v, 0, nullptr, {}, {}};
}
Field leaf(const char* name, double& v) {
  return {name, Kind::kDouble, &v, 0, nullptr, {}, {}};
}
Field leaf(const char* name, bool& v) {
  return {name, Kind::kBool, &v, 0, nullptr, {}, {}};
}
Field leaf(const char* name, std::string& v) {
  return {name, Kind::kString, &v, 0, nullptr, {}, {}};
}
Field leaf(const char* name, std::vector<std::string>& v) {
  return {name, Kind::kStringList, &v, 0, nullptr, {}, {}};
}
template <size_t N>
Field leaf(const char* name, std::array<double, N>& v) {
  return {name, Kind::kDoubleArray, v.data(), N, nullptr, {}, {}};
}
template <class E, class = std::enable_if_t<std::is_enum_v<E>>>
Field leaf(const char* name, E& v, std::vector<std::string> allowed = {}) {
  static const Choice choice = {
      [](const std::string& n, void* p) { return from_name(n, *static_cast<E*>(p)); },
      [](const void* p) { return std::string(config::name(*static_cast<const E*>(p))); },
      &names<E>};
  return {name, Kind::kChoice, &v, 0, &choice, std::move(allowed), {}};
}
Field leaf(const char* name, Freeze& v) {
  static const Choice choice = {
      [](const std::string& n, void* p) { return from_name(n, *static_cast<Freeze*>(p)); },
      [](const void* p) { return config::name(*static_cast<const Freeze*>(p)); },
      &freeze_forms};
  return {name, Kind::kChoice, &v, 0, &choice, {}, {}};
}
Field section(const char* name, std::vector<Field> children) {
  return {name, Kind::kSection, nullptr, 0, nullptr, {}, std::move(children)};
}

Field augment_section(AugmentConfig& a) {
  return section("augment",
                 {leaf("enabled", a.enabled), leaf("crop_scale", a.crop_scale),
                  leaf("color_jitter", a.color_jitter), leaf("random_erasing", a.random_erasing),
                  leaf("hflip", a.hflip), leaf("interpolation", a.interpolation),
                  leaf("jitter_order", a.jitter_order)});
}

Field finetune_section(FinetuneConfig& f) {
  return section("finetune", {leaf("data", f.data),
                              leaf("classes", f.classes),
                              leaf("level", f.level),
                              leaf("feature", f.feature),
                              leaf("init", f.init),
                              leaf("head_init", f.head_init),
                              leaf("prompts", f.prompts),
                              leaf("freeze", f.freeze),
                              leaf("epochs", f.epochs),
                              leaf("steps", f.steps),
                              leaf("batch_size", f.batch_size),
                              leaf("blr", f.blr),
                              leaf("lr", f.lr),
                              leaf("min_lr", f.min_lr),
                              leaf("warmup_epochs", f.warmup_epochs),
                              leaf("layer_decay", f.layer_decay),
                              leaf("weight_decay", f.weight_decay),
                              leaf("betas", f.betas),
                              leaf("eps", f.eps),
                              leaf("clip_norm", f.clip_norm),
                              leaf("accum_steps", f.accum_steps),
                              leaf("drop_path", f.drop_path),
                              leaf("label_smoothing", f.label_smoothing),
                              leaf("mixup", f.mixup),
                              leaf("cutmix", f.cutmix),
                              leaf("class_weights", f.class_weights),
                              leaf("precision", f.precision),
                              leaf("select", f.select),
                              augment_section(f.augment),
                              leaf("val_fraction", f.val_fraction),
                              leaf("test_fraction", f.test_fraction),
                              leaf("split_seed", f.split_seed)});
}

}  // namespace

std::vector<Field> schema(Config& c) {
  auto& m = c.model;
  auto& d = c.data;
  auto& o = c.optim;
  auto& t = c.train;
  return {
      section(
          "model",
          {section("vision",
                   {leaf("preset", m.vision.preset), leaf("image_size", m.vision.image_size),
                    leaf("patch_size", m.vision.patch_size), leaf("width", m.vision.width),
                    leaf("layers", m.vision.layers), leaf("heads", m.vision.heads),
                    leaf("mlp_ratio", m.vision.mlp_ratio), leaf("activation", m.vision.activation),
                    leaf("patch_bias", m.vision.patch_bias), leaf("norm_pre", m.vision.norm_pre),
                    leaf("class_token", m.vision.class_token),
                    leaf("register_tokens", m.vision.register_tokens),
                    leaf("pos_embed_prefix", m.vision.pos_embed_prefix),
                    leaf("layer_scale", m.vision.layer_scale), leaf("pool", m.vision.pool),
                    leaf("qkv_bias", m.vision.qkv_bias), leaf("norm_eps", m.vision.norm_eps)}),
           section("text",
                   {leaf("preset", m.text.preset), leaf("vocab_size", m.text.vocab_size),
                    leaf("hidden", m.text.hidden), leaf("layers", m.text.layers),
                    leaf("heads", m.text.heads), leaf("intermediate", m.text.intermediate),
                    leaf("max_position", m.text.max_position), leaf("dropout", m.text.dropout)}),
           leaf("embed_dim", m.embed_dim), leaf("logit_scale_init", m.logit_scale_init),
           section("init", {leaf("vision", m.init.vision), leaf("text", m.init.text),
                            leaf("full", m.init.full), leaf("required", m.init.required)})}),
      section("data",
              {leaf("train", d.train), leaf("val", d.val), leaf("format", d.format),
               leaf("image_size", d.image_size), leaf("preprocess", d.preprocess),
               leaf("source_size", d.source_size), leaf("context_length", d.context_length),
               section("tokenizer", {leaf("type", d.tokenizer.type), leaf("path", d.tokenizer.path),
                                     leaf("lowercase", d.tokenizer.lowercase),
                                     leaf("map_quotes", d.tokenizer.map_quotes)}),
               augment_section(d.augment), leaf("mean", d.mean), leaf("std", d.std),
               leaf("workers", d.workers), leaf("prefetch", d.prefetch),
               leaf("on_bad_sample", d.on_bad_sample), leaf("max_image_pixels", d.max_image_pixels),
               leaf("drop_last", d.drop_last)}),
      section("loss", {section("weights", {leaf("patient", c.loss.weights.patient),
                                           leaf("left", c.loss.weights.left),
                                           leaf("right", c.loss.weights.right)}),
                       leaf("gather", c.loss.gather), leaf("local_loss", c.loss.local_loss),
                       leaf("duplicates", c.loss.duplicates),
                       leaf("logit_scale_max", c.loss.logit_scale_max)}),
      section("optim", {leaf("lr", o.lr), leaf("weight_decay", o.weight_decay),
                        leaf("no_decay", o.no_decay), leaf("betas", o.betas), leaf("eps", o.eps),
                        leaf("warmup_steps", o.warmup_steps), leaf("schedule", o.schedule),
                        leaf("min_lr", o.min_lr), leaf("cooldown_steps", o.cooldown_steps),
                        leaf("clip_norm", o.clip_norm), leaf("accum_steps", o.accum_steps)}),
      section("train",
              {leaf("steps", t.steps), leaf("epochs", t.epochs), leaf("batch_size", t.batch_size),
               leaf("precision", t.precision, {"fp32", "bf16", "fp16"}),
               leaf("device", t.device), leaf("threads", t.threads),
               leaf("seed", t.seed), leaf("grad_checkpointing", t.grad_checkpointing),
               section("freeze", {leaf("vision", t.freeze.vision), leaf("text", t.freeze.text),
                                  leaf("vision_blocks", t.freeze.vision_blocks),
                                  leaf("text_blocks", t.freeze.text_blocks)}),
               leaf("val_every", t.val_every), leaf("max_skipped_steps", t.max_skipped_steps),
               leaf("deterministic", t.deterministic)}),
      section("checkpoint",
              {leaf("dir", c.checkpoint.dir), leaf("every_steps", c.checkpoint.every_steps),
               leaf("every_epochs", c.checkpoint.every_epochs),
               leaf("keep_last", c.checkpoint.keep_last),
               leaf("keep_every", c.checkpoint.keep_every), leaf("resume", c.checkpoint.resume)}),
      section("log", {leaf("dir", c.log.dir), leaf("interval", c.log.interval),
                      leaf("tensorboard", c.log.tensorboard), leaf("level", c.log.level)}),
      section("dist", {leaf("backend", c.dist.backend), leaf("timeout_s", c.dist.timeout_s),
                       leaf("bucket_mb", c.dist.bucket_mb)}),
      section("eval",
              {section("probe",
                       {leaf("every_steps", c.eval.probe.every_steps),
                        leaf("data", c.eval.probe.data), leaf("classes", c.eval.probe.classes),
                        leaf("level", c.eval.probe.level), leaf("feature", c.eval.probe.feature),
                        leaf("shots", c.eval.probe.shots), leaf("balanced", c.eval.probe.balanced),
                        leaf("val_fraction", c.eval.probe.val_fraction),
                        leaf("test_fraction", c.eval.probe.test_fraction),
                        leaf("ignore_split", c.eval.probe.ignore_split),
                        leaf("split_seed", c.eval.probe.split_seed)})}),
      finetune_section(c.finetune),
  };
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                                          std::tolower(static_cast<unsigned char>(b[j - 1]))
                                      ? 0
                                      : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string nearest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  // Close enough to be a typo: a third of the longer word, at least 2 edits.
  size_t len = std::max(word.size(), best.size());
  size_t limit = std::max<size_t>(2, len / 3);
  if (best_d <= limit) return best;
  // A shortened name (`patch` for `patch_size`) is a prefix of exactly one candidate.
  std::string prefixed;
  if (word.size() >= 3)
    for (const auto& c : candidates)
      if (c.size() > word.size() && c.compare(0, word.size(), word) == 0) {
        if (!prefixed.empty()) return std::string();
        prefixed = c;
      }
  return prefixed;
}

bool parse_int(const std::string& s, int64_t& out) {
  size_t i = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (!std::isdigit(static_cast<unsigned char>(s[k]))) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE || end != s.c_str() + s.size()) return false;
  out = static_cast<int64_t>(v);
  return true;
}

bool parse_uint(const std::string& s, uint64_t& out) {
  size_t i = (!s.empty() && s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (!std::isdigit(static_cast<unsigned char>(s[k]))) return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE || end != s.c_str() + s.size()) return false;
  out = static_cast<uint64_t>(v);
  return true;
}

bool parse_double(const std::string& s, double& out) {
  // Decimal forms only: [+-] digits [. digits] [e [+-] digits]; no hex, inf or nan.
  size_t i = 0, n = s.size();
  if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
  size_t digits = 0;
  while (i < n && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < n && s[i] == '.') {
    ++i;
    while (i < n && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < n && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  if (i != n) return false;
  errno = 0;
  double v = std::strtod(s.c_str(), nullptr);
  if (!std::isfinite(v)) return false;
  out = v;
  return true;
}

bool parse_bool(const std::string& s, bool& out) {
  std::string l;
  for (char ch : s) l += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (l == "true" || l == "yes" || l == "1") return out = true, true;
  if (l == "false" || l == "no" || l == "0") return out = false, true;
  return false;
}

std::string format_double(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

}  // namespace retclip::config::detail
