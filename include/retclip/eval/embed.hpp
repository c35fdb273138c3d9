// Embedding of a manifest with exported encoders (`retclip embed`): the six L2-normalised
// embeddings of every patient, written to one safetensors file.
//
//   eval::EmbedOptions o;  o.weights = "out/export";  o.manifest = "val.csv";  o.out = "e.safetensors";
//   int64_t n = eval::embed_manifest(o);
#pragma once

#include <cstdint>
#include <string>

namespace retclip::eval {

struct EmbedOptions {
  std::string weights;   ///< export directory (retclip.json + full.safetensors)
  std::string manifest;  ///< CSV/JSONL manifest or RET-CLIP directory
  std::string split;     ///< only rows of this split (empty = all)
  std::string out;       ///< .safetensors or .npy prefix
  int64_t batch_size = 32;
  int64_t workers = 2;  ///< loader threads decoding while the model runs
  std::string device = "auto";
  bool save_inputs = false;  ///< also store input_left/right [N,3,S,S], input_tokens [N,T]
};

/// Writes patient_img, left_img, right_img, patient_txt, left_txt, right_txt [N,E]
/// (f32, L2-normalised; zero rows for a missing eye) and has_left / has_right [N]
/// (u8) to a safetensors file whose metadata holds the patient ids as a JSON list.
/// Returns the number of patients embedded.
int64_t embed_manifest(const EmbedOptions& options);

}  // namespace retclip::eval
