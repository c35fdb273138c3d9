// `retclip export`: encoder weights from a checkpoint in retclip's format (safetensors,
// RET-CLIP keys, JSON sidecar) and/or open_clip, timm and Hugging Face folders.
#include <fmt/format.h>

#include <sstream>

#include "command.hpp"
#include "retclip/io/export.hpp"

namespace {

struct ExportArgs {
  std::string checkpoint, out, parts = "vision,text,full", tokenizer;
  std::vector<std::string> formats{"retclip"};
};

retclip::cli::RunFn add_export(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* sub = app.add_subcommand("export", "Export encoders from a checkpoint as safetensors");
  sub->add_option("--checkpoint", a->checkpoint, "step-N, checkpoints or run directory")->required();
  sub->add_option("--out", a->out, "output directory")->required();
  sub->add_option("--parts", a->parts, "retclip format files, comma-separated: vision,text,full");
  sub->add_option("--format", a->formats,
                  "retclip (into --out), open_clip, timm, hf (into --out/<format>); several "
                  "allowed, comma-separated or repeated")
      ->delimiter(',');
  sub->add_option("--tokenizer", a->tokenizer,
                  "tokenizer file to ship with the text tower (default: the one the run "
                  "trained with, from its config or its run directory)");
  return [a] {
    std::vector<std::string> parts;
    std::stringstream ss(a->parts);
    for (std::string p; std::getline(ss, p, ',');)
      if (!p.empty()) parts.push_back(p);
    std::string formats;
    for (const auto& f : a->formats) formats += (formats.empty() ? "" : ",") + f;
    auto r = retclip::io::export_checkpoint(a->checkpoint, a->out, parts,
                                            retclip::io::parse_export_formats(formats), a->tokenizer);
    for (const auto& f : r.files) fmt::print("{}\n", f.string());
    fmt::print("exported step {} to {}\n", r.step, a->out);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(export, add_export);
