// `retclip predict`: per-sample class probabilities of a manifest with a fine-tuned
// classifier (eval/predict.hpp), written as CSV.
#include <fmt/format.h>

#include "command.hpp"
#include "retclip/eval/predict.hpp"

namespace {

retclip::cli::RunFn add_predict(CLI::App& app) {
  auto o = std::make_shared<retclip::eval::PredictOptions>();
  auto* sub = app.add_subcommand("predict", "Class probabilities of a manifest's images (CSV)");
  sub->add_option("--weights", o->weights, "classifier directory (<finetune log.dir>/classifier)")
      ->required();
  sub->add_option("--manifest", o->manifest, "patient manifest (.csv/.jsonl) or RET-CLIP dir")
      ->required();
  sub->add_option("--out", o->out, "CSV: id, patient_id, eye, one probability per class")
      ->required();
  sub->add_option("--split", o->split, "only rows of this split");
  sub->add_option("--batch", o->batch_size, "images (or patients) per forward pass");
  sub->add_option("--workers", o->workers, "loader worker threads");
  sub->add_option("--device", o->device, "auto | cpu | cuda");
  sub->add_option("--save-inputs", o->save_inputs,
                  "also write the preprocessed inputs and probabilities (.safetensors)");
  return [o] {
    const int64_t n = retclip::eval::predict_manifest(*o);
    fmt::print("predict: {} rows -> {}\n", n, o->out);
    return 0;
  };
}

}  // namespace

RETCLIP_COMMAND(predict, add_predict);
