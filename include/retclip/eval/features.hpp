// Frozen-encoder features of a labelled set, extracted through the data loader's worker
// threads (decode + fundus crop + resize overlap the forward pass), cached as safetensors
// with the item ids in the metadata.
//
//   eval::Encoder enc = eval::load_encoder("export/");            // or a checkpoint step dir
//   eval::FeatureOptions fo;  fo.level = "eye";  fo.feature = "post_proj";
//   eval::Features f = eval::extract_features(enc, set.items, fo);   // f.x [N, E]
//   eval::save_features("feats.safetensors", f);  auto g = eval::load_features(...);
//
// Features (not normalised), for one eye image v and a patient with eyes l, r:
//   eye     pre_proj   ln_post(CLS)                  [D]
//           post_proj  ViT output, ln_post(CLS) @ visual.proj   [E]
//           mapping    left/right_feature_mapping(post_proj) by the eye's laterality
//                      (eyes of unknown laterality are refused) [E]
//   patient pre_proj   cat(pre_proj(l), pre_proj(r))  [2D]
//           post_proj  global_feature_mapping(cat(post_proj(l), post_proj(r))) [E]
//   A missing eye of a patient is replaced by the present one, as in training.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "retclip/config/config.hpp"
#include "retclip/data/image.hpp"
#include "retclip/data/labels.hpp"
#include "retclip/model/retclip.hpp"

namespace retclip::data {
struct LoaderOptions;  // data/loader.hpp
class SampleSource;
}  // namespace retclip::data

namespace retclip::eval {

/// A RetClip model with the preprocessing it was trained with.
struct Encoder {
  model::RetClip net{nullptr};
  config::Config cfg;
  std::string source;          ///< export or checkpoint directory
  std::string tokenizer_path;  ///< tokenizer file (export: beside the weights; checkpoint: config)
  bool has_text = false;       ///< the weights include the text tower
};

/// `dir`: an export directory (retclip.json + full.safetensors or vision.safetensors), or
/// a checkpoint, checkpoints or run directory (its newest complete checkpoint), or an image
/// tower's weights file (timm / RETFound / DINOv2 / CLIP; the tower the file holds, its
/// size and, for timm's non-CLIP ViTs, ImageNet's mean and std; no text tower).
Encoder load_encoder(const std::filesystem::path& dir);

/// The shape `enc` has, freshly initialised with `seed` (a baseline for the probe).
Encoder random_encoder(const Encoder& enc, uint64_t seed);

struct FeatureOptions {
  config::Level level = config::Level::kEye;           ///< kEye | kPatient
  config::Feature feature = config::Feature::kPostProj;  ///< kPreProj | kPostProj
  bool mapping = false;               ///< eye level: apply left/right_feature_mapping
  int64_t batch_size = 64;
  int64_t workers = 2;
  std::string device = "auto";  ///< "auto" | "cpu" | "cuda"
  data::BadSamplePolicy policy = data::BadSamplePolicy::kFail;
};

struct Features {
  at::Tensor x;                  ///< [N, F] float32
  std::vector<std::string> ids;  ///< item id per row
  /// As the file records them ("eye" / "patient", "pre_proj" / "post_proj"); "" when a
  /// file does not record one.
  std::string level, feature;
  bool mapping = false;
  std::vector<std::string> missing;  ///< ids that could not be loaded (policy skip)
  double seconds = 0;                ///< wall time of the extraction
};

/// The data::Loader source of labelled items at `level` (kEye: each item's image in the
/// left slot; kPatient: both eyes, either may be missing), with a token row of zeros of
/// `context_length` (only the image tower runs); images above `max_pixels` (as
/// data.max_image_pixels) are bad samples. Sample i is items[i]. Throws UsageError
/// naming the item's origin when an item is not of `level`. Images are preprocessed as
/// `preprocess` (data.preprocess of the encoder's config).
std::shared_ptr<data::SampleSource> make_item_source(
    const std::vector<data::LabelledItem>& items, config::Level level, int64_t image_size,
    int64_t context_length, int64_t max_pixels,
    data::Preprocess preprocess = data::Preprocess::kFundusCrop);

/// Items must be of the requested level (eye items for kEye, patient items for kPatient).
Features extract_features(Encoder& enc, const std::vector<data::LabelledItem>& items,
                          const FeatureOptions& options);

void save_features(const std::filesystem::path& path, const Features& f, const std::string& source);
Features load_features(const std::filesystem::path& path);

/// "auto" -> CUDA when available, else CPU.
at::Device pick_device(const std::string& name);

/// Loader options for inference with a model trained on `data`: its image size, context
/// length and normalisation, no augmentation, every sample once in order, and pinned
/// memory for a CUDA device. Features and `retclip embed` both read through these.
data::LoaderOptions inference_loader_options(const config::DataConfig& data, int64_t batch_size,
                                             int64_t workers, at::Device device,
                                             data::BadSamplePolicy policy);

}  // namespace retclip::eval
