// `retclip config show|check`: print the resolved config (defaults < --config file <
// --set overrides) as YAML, or check it and say "config OK". Errors are UsageErrors,
// which main() prints on one line and turns into exit code 2.
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/config/config.hpp"
#include "retclip/io/interop.hpp"

namespace {

struct ConfigArgs {
  std::string config;
  std::vector<std::string> sets;
};

void add_config_options(CLI::App* sub, ConfigArgs& args) {
  sub->add_option("--config,-c", args.config, "YAML config file (none: the defaults)");
  sub->add_option("--set", args.sets, "override one key, e.g. --set optim.lr=1e-4 (repeatable)")
      ->type_name("KEY=VALUE")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

retclip::cli::RunFn add_config(CLI::App& app) {
  auto args = std::make_shared<ConfigArgs>();
  auto* sub = app.add_subcommand("config", "Show or check a run configuration");
  sub->require_subcommand(1);
  auto* show = sub->add_subcommand("show", "Print the resolved config as YAML (every key)");
  auto* check = sub->add_subcommand("check", "Validate a config; exit 2 with the first error");
  add_config_options(show, *args);
  add_config_options(check, *args);
  return [args, show, check] {
    using namespace retclip;
    auto cfg = config::load(args->config, args->sets);
    // Presets "hf" / "checkpoint" take their sizes from the pretrained files.
    io::resolve_pretrained_presets(cfg.model);
    config::validate(cfg);
    if (show->parsed()) fmt::print("{}", config::to_yaml(cfg));
    if (check->parsed())
      fmt::print("config OK: {}\n", args->config.empty() ? "defaults" : args->config);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(config, add_config);
