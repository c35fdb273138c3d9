// Opening training and validation data for the trainer.
#include "retclip/train/data_stream.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "retclip/data/manifest.hpp"
#include "retclip/data/precheck.hpp"
#include "retclip/data/shards.hpp"
#include "retclip/util/error.hpp"
#include "retclip/util/log.hpp"

namespace retclip::train {

namespace fs = std::filesystem;

namespace {

bool is_shard_dir(const std::string& path, const std::string& format) {
  if (format == "shards") return true;
  if (format != "auto") return false;
  return fs::is_directory(path) && fs::exists(fs::path(path) / "index.json");
}

struct Opened {
  std::shared_ptr<data::SampleSource> source;
  std::string desc;
  std::string shard_tokenizer;  ///< tokenizer recorded by `retclip pack` ("type:file")
  std::string shard_dir;        ///< the shard set's directory (shard_tokenizer is relative to it)
  bool has_tokens = false;
};

Opened open_source(const config::Config& cfg, const std::string& path, const std::string& split,
                   const std::string& key, data::BadSampleLog* bad_log) {
  RETCLIP_CHECK_USAGE(!path.empty(), key,
                      " is empty: expected a manifest (.csv/.jsonl), a "
                      "RET-CLIP directory or a shard directory");
  RETCLIP_CHECK_USAGE(fs::exists(path), key, ": ", path, " does not exist");
  Opened o;
  const auto policy = cfg.data.on_bad_sample;
  if (is_shard_dir(path, cfg.data.format)) {
    auto reader = data::ShardReader::open(path);
    const auto& info = reader->info();
    const int64_t source = cfg.data.source_size > 0 ? cfg.data.source_size : cfg.data.image_size;
    if (cfg.data.source_size > 0 || info.image_size < cfg.data.image_size) {
      RETCLIP_CHECK_USAGE(info.image_size == source, key, ": shards in ", path, " hold ",
                          info.image_size, " px images but data.source_size is ", source,
                          ". HINT: repack with --size ", source,
                          " or set data.source_size=", info.image_size);
    } else {
      RETCLIP_CHECK_USAGE(info.image_size == cfg.data.image_size, key, ": shards in ", path,
                          " hold ", info.image_size, " px images but data.image_size is ",
                          cfg.data.image_size, ". HINT: set data.source_size=", info.image_size,
                          " to crop the ", cfg.data.image_size,
                          " px inputs from them, or "
                          "repack with --size ",
                          cfg.data.image_size);
    }
    const char* packed = config::name(info.preprocess);
    const char* wanted = config::name(cfg.data.preprocess);
    RETCLIP_CHECK_USAGE(info.preprocess == cfg.data.preprocess, key, ": shards in ", path,
                        " were packed with --preprocess ", packed, " but data.preprocess is ",
                        wanted, ". HINT: set data.preprocess=", packed,
                        " or repack with --preprocess ", wanted);
    if (info.has_tokens)
      RETCLIP_CHECK_USAGE(info.context_length == cfg.data.context_length, key, ": shards in ", path,
                          " carry ", info.context_length,
                          " token ids per report but data.context_length is ",
                          cfg.data.context_length);
    o.has_tokens = info.has_tokens;
    o.shard_tokenizer = info.tokenizer;
    o.shard_dir = path;
    o.desc = fmt::format("{}: {} patients from shards {} ({} px{})", key, info.records, path,
                         info.image_size, info.has_tokens ? ", pre-tokenized" : "");
    o.source = data::make_shard_source(reader);
    return o;
  }
  data::ReadReport rep;
  auto samples = data::read_samples(path, cfg.data.format, split, policy, &rep);
  if (bad_log) bad_log->add(rep.bad);
  // Every image is looked at before the first step, so that a missing or broken file
  // stops (fail) or is dropped (skip) now rather than when the loader reaches its row.
  data::PrecheckOptions pre_opts;
  pre_opts.max_pixels = cfg.data.max_image_pixels;
  pre_opts.policy = policy;
  pre_opts.log = bad_log;
  data::PrecheckReport pre;
  samples = data::precheck_samples(std::move(samples), pre_opts, &pre);
  std::vector<data::BadSample> bad = rep.bad;
  bad.insert(bad.end(), pre.bad.begin(), pre.bad.end());
  RETCLIP_CHECK_USAGE(!samples.empty(), key, ": no usable patients in ", path,
                      split.empty() ? "" : " (split " + split + ")",
                      bad.empty() ? std::string()
                                  : str_cat("; ", bad.size(), " bad, first: ", bad.front().origin,
                                            ": ", bad.front().reason));
  const std::string listed = bad_log ? str_cat(", all listed in ", bad_log->path()) : "";
  if (!bad.empty())
    log::warn("{}: {} bad samples skipped (data.on_bad_sample: skip){}; first {}:", key, bad.size(),
              listed, std::min<size_t>(bad.size(), 5));
  for (size_t i = 0; i < bad.size() && i < 5; ++i)
    log::warn("{}:   {}: {}", key, bad[i].origin, bad[i].reason);
  o.desc = fmt::format("{}: {} samples from {} (decoded on the fly; {} bad samples skipped)", key,
                       samples.size(), path, bad.size());
  o.source = data::make_manifest_source(
      std::move(samples), cfg.data.source_size > 0 ? cfg.data.source_size : cfg.data.image_size,
      cfg.data.max_image_pixels, cfg.data.preprocess);
  return o;
}

data::LoaderOptions loader_options(const config::Config& cfg, bool train, int64_t rank,
                                   int64_t world) {
  data::LoaderOptions o;
  o.batch_size = cfg.train.batch_size;
  o.image_size = cfg.data.image_size;
  o.source_size = cfg.data.source_size;
  o.context_length = cfg.data.context_length;
  o.workers = cfg.data.workers;
  o.prefetch = cfg.data.prefetch;
  o.augment.enabled = train && cfg.data.augment.enabled;
  o.augment.crop_scale = cfg.data.augment.crop_scale;
  o.augment.color_jitter = cfg.data.augment.color_jitter;
  o.augment.random_erasing = cfg.data.augment.random_erasing;
  o.augment.hflip = cfg.data.augment.hflip;
  o.augment.bicubic = cfg.data.augment.interpolation == "bicubic";
  o.augment.random_jitter_order = cfg.data.augment.jitter_order == "random";
  o.mean = cfg.data.mean;
  o.std = cfg.data.std;
  o.seed = cfg.train.seed;
  o.rank = train ? rank : 0;
  o.world = train ? world : 1;
  o.shuffle = train;
  o.drop_last = train ? cfg.data.drop_last : false;
  o.pin_memory = torch::cuda::is_available() && cfg.train.device != "cpu";
  o.policy = cfg.data.on_bad_sample;
  return o;
}

std::shared_ptr<const data::Tokenizer> open_tokenizer(const config::Config& cfg,
                                                      const Opened& train) {
  std::string type = cfg.data.tokenizer.type, path = cfg.data.tokenizer.path;
  if (path.empty()) {
    // `retclip pack` records "type:file", the file relative to the set's index.json; a
    // recorded file that cannot be found is an error (the run would not know its
    // vocabulary, nor could its export name a tokenizer).
    if (auto found = data::resolve_shard_tokenizer(train.shard_dir, train.shard_tokenizer)) {
      type = found->type;
      path = found->path;
    }
  }
  if (path.empty()) {
    RETCLIP_CHECK_USAGE(
        train.has_tokens,
        "data.tokenizer.path is empty and the training data "
        "carries no token ids. HINT: set data.tokenizer.path to a vocab.txt "
        "(wordpiece) or a .model (sentencepiece), e.g. from `retclip tokenizer train`");
    return nullptr;
  }
  // An absolute path, so that what the run records names the file from anywhere.
  return data::load_tokenizer(type, fs::absolute(path).lexically_normal().string(),
                              cfg.data.tokenizer.lowercase, cfg.data.tokenizer.map_quotes);
}

MicroBatch to_micro(const data::Batch& b, const at::Device& device) {
  const bool nb = device.is_cuda();
  return {b.left.to(device, nb),     b.right.to(device, nb),     b.tokens.to(device, nb),
          b.has_left.to(device, nb), b.has_right.to(device, nb), b.eye_report_id.to(device, nb)};
}

}  // namespace

TrainData TrainData::open(const config::Config& cfg, int64_t rank, int64_t world,
                          const std::string& run_dir) {
  TrainData d;
  // Rank r > 0 lists what its own loader finds (the readers' and pre-check's findings
  // are the same on every rank), as train.rank<r>.log beside train.log.
  const fs::path dir = run_dir.empty() ? fs::path(cfg.log.dir) : fs::path(run_dir);
  fs::create_directories(dir);
  d.bad_log_ = std::make_shared<data::BadSampleLog>(
      (dir / (rank == 0 ? std::string(data::kBadSamplesFile)
                        : fmt::format("bad_samples.rank{}.tsv", rank)))
          .string());
  data::BadSampleLog* read_log = rank == 0 ? d.bad_log_.get() : nullptr;
  Opened tr = open_source(cfg, cfg.data.train, "train", "data.train", read_log);
  d.tokenizer_ = open_tokenizer(cfg, tr);
  d.train_desc_ = tr.desc;
  auto train_opts = loader_options(cfg, true, rank, world);
  train_opts.bad_log = d.bad_log_;
  d.train_ = std::make_unique<data::Loader>(tr.source, d.tokenizer_, train_opts);
  if (!cfg.data.val.empty()) {
    Opened va = open_source(cfg, cfg.data.val, "val", "data.val", read_log);
    RETCLIP_CHECK_USAGE(va.has_tokens || d.tokenizer_,
                        "data.val carries no token ids and no "
                        "tokenizer is configured (data.tokenizer.path)");
    d.val_desc_ = va.desc;
    auto val_opts = loader_options(cfg, false, rank, world);
    val_opts.bad_log = d.bad_log_;
    d.val_ = std::make_unique<data::Loader>(va.source, d.tokenizer_, val_opts);
  }
  return d;
}

TrainData TrainData::open_eval(const config::Config& cfg, const std::string& path) {
  TrainData d;
  Opened va = open_source(cfg, path, "val", "eval data", nullptr);
  d.tokenizer_ = open_tokenizer(cfg, va);
  d.val_desc_ = va.desc;
  d.val_ =
      std::make_unique<data::Loader>(va.source, d.tokenizer_, loader_options(cfg, false, 0, 1));
  return d;
}

std::string TrainData::describe() const {
  std::string s = train_desc_;
  if (!val_desc_.empty()) s += (s.empty() ? "" : "\n") + val_desc_;
  if (tokenizer_)
    s += fmt::format("\ntokenizer: {} {} ({} ids)", tokenizer_->type(), tokenizer_->path(),
                     tokenizer_->vocab_size());
  return s;
}

int64_t TrainData::vocab_size() const {
  return tokenizer_ ? tokenizer_->vocab_size() : 0;
}
int64_t TrainData::size() const {
  return train_ ? train_->size() : 0;
}
int64_t TrainData::steps_per_epoch() const {
  return train_ ? train_->steps_per_epoch() : 0;
}
int64_t TrainData::val_size() const {
  return val_ ? val_->size() : 0;
}
int64_t TrainData::bad_samples() const {
  return train_ ? train_->bad_samples() : 0;
}
std::string TrainData::bad_sample_list() const {
  return bad_log_ ? bad_log_->path() : "";
}

MicroBatch TrainData::next_train(const at::Device& device) {
  auto b = train_->next();
  if (!b) {
    // After the end of an epoch the cursor counts the epochs completed: the 1-based
    // number of the epoch that just ended.
    log::info("epoch {} done ({} bad samples replaced so far{})", train_->state().epoch,
              train_->bad_samples(),
              train_->bad_samples() > 0 && bad_log_ ? ", listed in " + bad_log_->path() : "");
    b = train_->next();
  }
  RETCLIP_CHECK(b.has_value(), "the training loader produced no batch for a new epoch");
  return to_micro(*b, device);
}

nlohmann::json TrainData::state() const {
  auto s = train_->state();
  return {{"epoch", s.epoch}, {"consumed", s.consumed}};
}

void TrainData::restore(const nlohmann::json& s) {
  data::LoaderState st;
  st.epoch = s.at("epoch").get<int64_t>();
  st.consumed = s.at("consumed").get<int64_t>();
  train_->restore(st);
}

BatchSource TrainData::val_source(const at::Device& device) {
  RETCLIP_CHECK(val_ != nullptr, "no validation data configured (data.val)");
  val_->restore(data::LoaderState{});
  data::Loader* loader = val_.get();
  return [loader, device](MicroBatch* out) {
    auto b = loader->next();
    if (!b) return false;
    *out = to_micro(*b, device);
    return true;
  };
}

}  // namespace retclip::train
