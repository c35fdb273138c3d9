// `retclip train`: pretraining from a YAML config (see train/trainer.hpp).
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/config/config.hpp"
#include "retclip/io/interop.hpp"
#include "retclip/train/trainer.hpp"

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> set;
  std::string resume;
  double max_minutes = 0;
  bool overwrite = false;
};

retclip::cli::RunFn add_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto* sub = app.add_subcommand("train", "Pretrain (or resume) from a YAML config");
  sub->add_option("--config,-c", a->config, "YAML config (defaults when omitted)");
  sub->add_option("--set", a->set, "override a key: --set optim.lr=1e-4 (repeatable)");
  retclip::cli::add_run_dir_options(sub, a->resume, a->overwrite);
  sub->add_option("--max-minutes", a->max_minutes,
                  "stop cleanly (checkpoint, validation) after this many minutes");
  return [a] {
    using namespace retclip;
    std::vector<std::string> overrides = a->set;
    if (!a->resume.empty()) overrides.push_back("checkpoint.resume=" + a->resume);
    config::Config cfg = config::load(a->config, overrides);
    // Presets "hf" / "checkpoint" take their sizes from the pretrained files.
    io::resolve_pretrained_presets(cfg.model);
    config::validate(cfg);
    train::TrainSummary s = train::run_training(cfg, {a->max_minutes, a->overwrite});
    if (s.rank != 0) return 0;  // rank 0 reports for the run
    if (s.final_eval) {
      const auto& r = s.final_eval->recall[model::Level::kPatient];
      fmt::print("held-out patient-level recall@1 {:.1f}% / @5 {:.1f}% (chance {:.1f}% / {:.1f}%), "
                 "{} patients\n",
                 100 * (r.i2t.at(1) + r.t2i.at(1)) / 2, 100 * (r.i2t.at(5) + r.t2i.at(5)) / 2,
                 100 * r.chance.at(1), 100 * r.chance.at(5), r.n);
    }
    fmt::print("trained to step {} ({}); checkpoint {}\n", s.end_step,
               s.interrupted ? "stopped early" : "complete", s.checkpoint);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(train, add_train);
