// `retclip eval`: held-out losses, in-batch accuracies and recall@k of a checkpoint.
#include <fmt/format.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "command.hpp"
#include "retclip/io/checkpoint_store.hpp"
#include "retclip/io/export.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/model/presets.hpp"
#include "retclip/train/data_stream.hpp"
#include "retclip/util/fs.hpp"
#include "retclip/util/system.hpp"

namespace {

struct EvalArgs {
  std::string checkpoint, data, out;
  std::vector<std::string> set;
  int64_t batch = 0;
};

retclip::cli::RunFn add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand("eval", "Evaluate a checkpoint on a held-out split");
  sub->add_option("--checkpoint", a->checkpoint, "step-N, checkpoints or run directory")->required();
  sub->add_option("--data", a->data, "shards, manifest or RET-CLIP directory")->required();
  sub->add_option("--out", a->out, "write the metrics as JSON here");
  sub->add_option("--batch", a->batch, "patients per batch (default: train.batch_size)");
  sub->add_option("--set", a->set,
                  "override a key of the checkpoint's config, e.g. "
                  "--set data.tokenizer.path=tok.model (repeatable)");
  return [a] {
    using namespace retclip;
    const io::CheckpointContents ck = io::open_checkpoint(a->checkpoint);
    config::Config cfg = config::load((ck.dir / io::CheckpointLayout::kConfig).string(), a->set);
    // The tokenizer the run trained with, also where the config names none (a run from
    // shards keeps a copy in its run directory).
    bool tokenizer_set = false;
    for (const auto& o : a->set) tokenizer_set = tokenizer_set || o.rfind("data.tokenizer.", 0) == 0;
    if (!tokenizer_set) {
      const auto tok = io::checkpoint_tokenizer(cfg, ck.dir);
      if (!tok.empty()) cfg.data.tokenizer.path = tok.string();
    }
    if (a->batch > 0) cfg.train.batch_size = a->batch;
    util::configure_threads(cfg.train.threads);
    auto data = train::TrainData::open_eval(cfg, a->data);
    model::RetClip net(model::retclip_options(cfg.model, data.vocab_size()));
    io::apply_state_dict(*net, io::load_weights(ck.weights), true);
    const at::Device device = train::resolve_device(cfg.train.device);
    net->to(device);
    auto opts = train::loss_options(cfg);
    auto r = train::evaluate(net, data.val_source(device), data.val_size(), opts,
                             cfg.train.precision);
    fmt::print("checkpoint {}\n{}", ck.dir.string(), r.to_string());
    // Recall is tie-aware: identical reports are one target (docs/EVALUATION.md).
    for (model::Level l : model::kLevels) {
      const eval::RecallResult& rr = r.recall[l];
      if (rr.n == 0) continue;
      fmt::print("  {:<8} {} distinct reports among {} pairs; recall counts each report once "
                 "(chance i2t@1 {:.1f}%, t2i@1 {:.1f}%)\n",
                 model::level_name(l), rr.distinct_texts, rr.n, 100 * rr.chance.at(1),
                 100 * rr.chance_t2i.at(1));
    }
    if (!a->out.empty()) {
      nlohmann::json j = r.metrics();
      j["checkpoint"] = ck.dir.string();
      j["patients"] = r.patients;
      const eval::RecallResult& rp = r.recall[model::Level::kPatient];
      for (int64_t k : {1, 5, 10}) {
        j[fmt::format("chance_r@{}", k)] = rp.chance.at(k);
        j[fmt::format("chance_t2i_r@{}", k)] = rp.chance_t2i.at(k);
      }
      j["distinct_reports"] = rp.distinct_texts;
      util::write_file_atomic(a->out, j.dump(2));
    }
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(eval, add_eval);
