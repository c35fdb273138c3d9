// `retclip embed`: image and text embeddings of every patient of a manifest.
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/eval/embed.hpp"

namespace {

retclip::cli::RunFn add_embed(CLI::App& app) {
  auto o = std::make_shared<retclip::eval::EmbedOptions>();
  auto* sub = app.add_subcommand("embed", "Embed the patients of a manifest with exported weights");
  sub->add_option("--weights", o->weights, "export directory (retclip.json)")->required();
  sub->add_option("--manifest", o->manifest, "CSV/JSONL manifest or RET-CLIP directory")->required();
  sub->add_option("--out", o->out, "output .safetensors file")->required();
  sub->add_option("--split", o->split, "only this split");
  sub->add_option("--batch", o->batch_size, "patients per forward pass");
  sub->add_option("--workers", o->workers, "loader threads decoding while the model runs");
  sub->add_option("--device", o->device, "auto | cpu | cuda");
  sub->add_flag("--save-inputs", o->save_inputs, "also store the preprocessed inputs (checks)");
  return [o] {
    int64_t n = retclip::eval::embed_manifest(*o);
    fmt::print("embedded {} patients into {}\n", n, o->out);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(embed, add_embed);
