// `retclip finetune`: supervised fine-tuning from a YAML config (see train/finetune.hpp).
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/config/config.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/train/finetune.hpp"

namespace {

struct FinetuneArgs {
  std::string config, resume, freeze, init, head_init, prompts;
  std::vector<std::string> set;
  double max_minutes = 0;
  bool overwrite = false;
};

retclip::cli::RunFn add_finetune(CLI::App& app) {
  auto a = std::make_shared<FinetuneArgs>();
  auto* sub = app.add_subcommand(
      "finetune",
      "Fine-tune the image tower with a linear head on a labelled set (RETFound recipe)");
  sub->add_option("--config,-c", a->config, "YAML config (e.g. configs/finetune-synth-dr.yaml)");
  sub->add_option("--set", a->set, "override a key: --set finetune.blr=1e-3 (repeatable)");
  sub->add_option("--freeze", a->freeze, "none | head-only | first-N-blocks (finetune.freeze)");
  sub->add_option("--init", a->init, "retclip export / checkpoint to start from (finetune.init)");
  sub->add_option("--head-init", a->head_init,
                  "random | zeroshot: the head from --prompts' class text embeddings "
                  "(finetune.head_init)");
  sub->add_option("--prompts", a->prompts,
                  "prompt file for --head-init zeroshot (finetune.prompts)");
  retclip::cli::add_run_dir_options(sub, a->resume, a->overwrite);
  sub->add_option("--max-minutes", a->max_minutes,
                  "stop cleanly (checkpoint) after this many minutes; resume to finish");
  return [a] {
    using namespace retclip;
    std::vector<std::string> overrides = a->set;
    if (!a->freeze.empty()) overrides.push_back("finetune.freeze=" + a->freeze);
    if (!a->init.empty()) overrides.push_back("finetune.init=" + a->init);
    if (!a->head_init.empty()) overrides.push_back("finetune.head_init=" + a->head_init);
    if (!a->prompts.empty()) overrides.push_back("finetune.prompts=" + a->prompts);
    if (!a->resume.empty()) overrides.push_back("checkpoint.resume=" + a->resume);
    config::Config cfg = config::load(a->config, overrides);
    io::resolve_pretrained_presets(cfg.model);
    config::validate(cfg);
    train::FinetuneSummary s = train::run_finetune(cfg, {a->max_minutes, a->overwrite});
    if (s.rank != 0) return 0;  // rank 0 reports for the run
    if (s.interrupted) {
      fmt::print(
          "fine-tuning stopped at step {} of {}; checkpoint {} (resume with --resume auto)\n",
          s.end_step, s.total_steps, s.checkpoint);
      return 0;
    }
    const auto& sel = s.results.at("selection");
    fmt::print("fine-tuned {} steps; chosen epoch {} (val {} = {:.4f}); test: {}; classifier {}\n",
               s.end_step, s.best_epoch, sel.at("criterion").get<std::string>(), s.best_score,
               s.results.at("test").is_null() ? "none" : s.results.at("test").dump(), s.export_dir);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(finetune, add_finetune);
