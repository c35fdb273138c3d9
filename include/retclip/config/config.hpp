// Typed configuration of a run: one struct per YAML section. Defaults follow the
// RET-CLIP reference (docs/MODEL.md, docs/CONFIG.md). Precedence: defaults < YAML < --set a.b=c.
//
//   auto cfg = config::load("configs/tiny-cpu.yaml", {"train.steps=100"});
//   config::validate(cfg);           // also done by load()
//   std::cout << config::to_yaml(cfg);
//
// Every error names the full key path ("optim.warmup_steps"), what was expected and
// what was found, with the YAML file and line where there is one.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "retclip/config/enums.hpp"

namespace retclip::config {

struct VisionConfig {
  std::string preset = "ViT-B-16";  ///< ViT-B-16 | ViT-L-14 | ViT-S-8 | vit-tiny | vit-micro
  int64_t image_size = 0;           ///< 0 = preset's (also sets data.image_size when 0)
  int64_t patch_size = 0;           ///< 0 = preset's
  int64_t width = 0;                ///< 0 = preset's
  int64_t layers = 0;               ///< 0 = preset's
  int64_t heads = 0;                ///< 0 = width / 64 (preset's)
  double mlp_ratio = 0;             ///< 0 = preset's (4)
  // The architecture (defaults: CLIP's). With preset `checkpoint` the ones the weights show
  // (patch_bias .. qkv_bias) are read from model.init.vision; docs/WEIGHTS.md.
  Activation activation = Activation::kAuto;  ///< auto | quick_gelu | gelu (auto: see enums.hpp)
  bool patch_bias = false;       ///< bias on the patch embedding (conv1.bias)
  bool norm_pre = true;          ///< LayerNorm ln_pre after the embeddings
  bool class_token = true;       ///< a class token (class_embedding)
  int64_t register_tokens = 0;   ///< register tokens (register_embedding [R, D])
  bool pos_embed_prefix = true;  ///< the positional embedding covers class/register tokens
  double layer_scale = 0;        ///< 0 = none, else the initial ls_1/ls_2 gamma
  /// auto (token with a class token, else avg) | token (class token through ln_post) | avg
  /// (mean of the patch tokens through ln_post) | avg_fc_norm (mean, then fc_norm: RETFound)
  Pool pool = Pool::kAuto;
  bool qkv_bias = true;  ///< bias on the attention's q, k, v projection
  double norm_eps = 0;   ///< 0 = 1e-5 with norm_pre (CLIP), else 1e-6 (timm)
};

struct TextConfig {
  std::string preset = "RoBERTa-wwm-ext-base-chinese";  ///< see model/presets.hpp
  int64_t vocab_size = 0;       ///< 0 = preset's, else the tokenizer's
  int64_t hidden = 0;           ///< 0 = preset's
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t intermediate = 0;
  int64_t max_position = 0;
  double dropout = 0.1;         ///< hidden and attention dropout (reference: 0.1)
};

struct InitConfig {
  std::string vision;  ///< OpenAI-CLIP/OpenCLIP ViT weights (.pt, TorchScript, safetensors)
  std::string text;    ///< HF BERT weights (pytorch_model.bin / model.safetensors)
  std::string full;    ///< a full retclip / RET-CLIP state dict
  /// The config is meant for pretrained towers: training stops before it starts when
  /// vision, text and full are all empty. `vision: none` says random towers on purpose.
  bool required = false;
};

struct ModelConfig {
  VisionConfig vision;
  TextConfig text;
  int64_t embed_dim = 0;               ///< 0 = vision preset's
  double logit_scale_init = 4.4998096703302650;  ///< ln 90, as the reference
  InitConfig init;
};

struct TokenizerConfig {
  /// auto (inferred from the file) | wordpiece (vocab.txt) | sentencepiece (.model)
  std::string type = "auto";
  std::string path;                ///< vocab.txt or .model; empty = data dir's tokenizer
  bool lowercase = true;           ///< wordpiece only
  /// Curly double quotes (U+201C, U+201D) become '"' before tokenizing, as Chinese-CLIP /
  /// RET-CLIP's text preprocessing does; off, WordPiece vocabularies without them give [UNK].
  bool map_quotes = false;
};

struct AugmentConfig {
  bool enabled = true;
  std::array<double, 2> crop_scale{0.9, 1.0};  ///< random resized crop area range
  double color_jitter = 0.2;                   ///< brightness/contrast/saturation strength
  double random_erasing = 0.1;                 ///< probability
  bool hflip = false;  ///< off: a flipped left eye looks like a right eye
  std::string interpolation = "bilinear";  ///< bilinear | bicubic (the crop's resize)
  std::string jitter_order = "fixed";      ///< fixed | random (torchvision ColorJitter)
};

struct DataConfig {
  std::string train;             ///< manifest (.csv/.jsonl), RET-CLIP dir, or shard dir
  std::string val;               ///< same forms; empty = no validation
  std::string format = "auto";   ///< auto | manifest | retclip | shards
  int64_t image_size = 224;
  /// fundus_crop (field of view, padded square) | resize (the whole photo squashed,
  /// as the reference's Resize((224, 224)))
  Preprocess preprocess = Preprocess::kFundusCrop;
  /// Pixels of the preprocessed square that augmentation samples from (0 = image_size);
  /// larger than image_size, the random resized crop takes real pixels (one resample).
  int64_t source_size = 0;
  int64_t context_length = 100;
  TokenizerConfig tokenizer;
  AugmentConfig augment;
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};
  int64_t workers = 2;           ///< loader threads
  int64_t prefetch = 4;          ///< batches queued ahead
  BadSamplePolicy on_bad_sample = BadSamplePolicy::kSkip;  ///< skip | fail
  /// Images with more pixels are bad samples, refused from the header before decoding
  /// (0 = no limit). Twice the largest fundus camera frame (about 5000 x 4000).
  int64_t max_image_pixels = 40'000'000;
  bool drop_last = true;         ///< drop or pad the last incomplete global batch
};

struct LossWeights {
  double patient = 1.0;
  double left = 1.0;
  double right = 1.0;
};

struct LossConfig {
  LossWeights weights;
  bool gather = true;          ///< global negatives across ranks
  bool local_loss = false;     ///< local rows x global columns (OpenCLIP's --local-loss)
  /// negative: identical reports of different patients are negatives (CLIP, RET-CLIP);
  /// positive: they are positives of each other (multi-positive targets).
  std::string duplicates = "negative";
  double logit_scale_max = 4.6051701859880914;  ///< ln 100 clamp (OpenCLIP)
};

struct OptimConfig {
  double lr = 3e-5;
  double weight_decay = 0.001;
  /// Parameters whose name contains any of these take no weight decay.
  std::vector<std::string> no_decay{"bias",
                                    "LayerNorm",
                                    "ln_",
                                    "logit_scale",
                                    "class_embedding",
                                    "positional_embedding",
                                    "position_embeddings",
                                    "register_embedding",
                                    "fc_norm",
                                    "ls_1.gamma",
                                    "ls_2.gamma"};
  std::array<double, 2> betas{0.9, 0.98};
  double eps = 1e-6;
  int64_t warmup_steps = 50;
  std::string schedule = "cosine";  ///< cosine | constant | const-cooldown
  double min_lr = 0.0;
  int64_t cooldown_steps = 0;      ///< const-cooldown only
  double clip_norm = 0.0;          ///< 0 = no clipping
  int64_t accum_steps = 1;         ///< micro-batches per step, full-batch negatives
};

struct FreezeConfig {
  bool vision = false;
  bool text = false;
  int64_t vision_blocks = 0;  ///< freeze the first N vision blocks (+ embeddings)
  int64_t text_blocks = 0;    ///< freeze the first N text layers (+ embeddings)
};

struct TrainConfig {
  int64_t steps = 0;           ///< total optimizer steps; 0 = derive from epochs
  int64_t epochs = 1;
  int64_t batch_size = 256;    ///< patients per rank per step
  Precision precision = Precision::kFp32;  ///< fp32 | bf16 | fp16 (not auto)
  std::string device = "auto";     ///< auto | cpu | cuda
  int64_t threads = 0;         ///< intra-op threads; 0 = all cores available
  uint64_t seed = 123;
  bool grad_checkpointing = false;
  FreezeConfig freeze;
  int64_t val_every = 0;       ///< steps between validations; 0 = at the end of each epoch
  int64_t max_skipped_steps = 10;  ///< consecutive non-finite steps before stopping
  bool deterministic = false;
};

struct CheckpointConfig {
  std::string dir;             ///< empty = <log.dir>/checkpoints
  int64_t every_steps = 500;   ///< steps between checkpoints (plus the last step, and on stop)
  int64_t every_epochs = 0;    ///< also at the end of every N-th epoch; 0 = off
  int64_t keep_last = 3;
  int64_t keep_every = 0;      ///< also keep every M-th step for good; 0 = none
  std::string resume;          ///< empty | auto | auto-or-scratch | path
};

struct LogConfig {
  std::string dir = "runs/retclip";  ///< run directory
  int64_t interval = 10;       ///< steps between progress lines
  bool tensorboard = true;
  std::string level = "info";  ///< debug | info | warn | error
};

struct DistConfig {
  std::string backend = "auto";  ///< auto | gloo | nccl
  double timeout_s = 600;
  double bucket_mb = 25;
};

/// eval.probe: a linear probe of the image encoder on a labelled set during pretraining
/// (docs/EVALUATION.md); off while every_steps is 0.
struct ProbeConfig {
  int64_t every_steps = 0;            ///< steps between probes; 0 = never
  std::string data;                   ///< labelled manifest or class folder root
  std::vector<std::string> classes;   ///< class order (required for flag-string labels)
  Level level = Level::kAuto;                ///< auto | eye | patient
  Feature feature = Feature::kPostProj;      ///< pre_proj | post_proj
  int64_t shots = 0;                  ///< K rows per class (0 = all of train)
  bool balanced = false;              ///< balanced class weights
  double val_fraction = 0.2;          ///< drawn from train when there is no val split
  double test_fraction = 0.0;         ///< drawn when the set has no split column
  bool ignore_split = false;          ///< draw every split anew (probe a held-out set)
  uint64_t split_seed = 0;
};

struct EvalConfig {
  ProbeConfig probe;
};

/// finetune: supervised fine-tuning of the image tower with a linear head (`retclip
/// finetune`, docs/FINETUNE.md). Defaults are RETFound's main_finetune.py recipe; the run
/// also reads train.{device,threads,seed,deterministic,max_skipped_steps}, data.{image_size,
/// mean,std,workers,prefetch,on_bad_sample}, model.* (tower sizes, model.init.vision),
/// checkpoint.* and log.*.
struct FinetuneConfig {
  std::string data;                  ///< labelled manifest or class folder root
  std::vector<std::string> classes;  ///< class order (required for flag-string labels)
  Level level = Level::kAuto;         ///< auto | eye | patient
  Feature feature = Feature::kPreProj;  ///< pre_proj (pooled CLS, timm's head input) | post_proj
  /// retclip export / checkpoint / run directory whose vision tower starts the run; empty:
  /// model.init.vision when set (OpenAI CLIP / OpenCLIP), else random initialisation.
  std::string init;
  /// random (N(0, 2e-5) weights, bias 0) | zeroshot: the head's rows are the class text
  /// embeddings of `prompts` from finetune.init's text tower times its logit scale, bias
  /// 0, on the L2-normalised post_proj feature, so step 0 scores as `retclip zeroshot`.
  std::string head_init = "random";
  std::string prompts;          ///< prompt file (`retclip zeroshot` format) for head_init zeroshot
  Freeze freeze;                ///< none | head-only | first-N-blocks (e.g. first-4-blocks)
  int64_t epochs = 50;
  int64_t steps = 0;          ///< 0 = epochs x steps per epoch (a cap for short runs)
  int64_t batch_size = 16;    ///< images (eye) or patients per rank per step
  double blr = 5e-3;          ///< base lr: lr = blr x global batch / 256 when lr is 0
  double lr = 0;              ///< absolute peak lr (0 = from blr)
  double min_lr = 1e-6;       ///< cosine floor
  double warmup_epochs = 10;  ///< linear warmup, in epochs (fractions allowed)
  double layer_decay = 0.65;  ///< layer-wise lr decay: block i gets decay^(L + 1 - (i + 1))
  double weight_decay = 0.05;  ///< none on 1-D params, biases, embeddings (optim.no_decay)
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double clip_norm = 0;          ///< 0 = no clipping
  int64_t accum_steps = 1;       ///< micro-batches per step (gradient accumulation)
  double drop_path = 0.2;        ///< stochastic depth rate of the last ViT block
  double label_smoothing = 0.1;  ///< targets (1 - e) y + e / C (multi-label: e / 2)
  double mixup = 0;              ///< mixup Beta(a, a) alpha; 0 = off
  double cutmix = 0;             ///< cutmix Beta(a, a) alpha; 0 = off (both on: 50/50 per batch)
  std::string class_weights = "none";  ///< none | balanced (n / (C n_c); multi-label: pos weight)
  Precision precision = Precision::kAuto;  ///< auto (bf16 on CUDA, else fp32) | fp32 | bf16 | fp16
  /// Validation criterion that picks the epoch: retfound = (f1_macro + auroc_macro +
  /// kappa) / 3 (multi-label: (f1_macro + auroc_macro) / 2), or one metric name
  /// (auroc_macro, f1_macro, kappa, accuracy, ...; higher is better).
  std::string select = "retfound";
  AugmentConfig augment{true, {0.08, 1.0}, 0.4, 0.25, true};
  double val_fraction = 0.2;   ///< drawn from train when there is no val split
  double test_fraction = 0.0;  ///< drawn when the set has no split column
  uint64_t split_seed = 0;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  LossConfig loss;
  OptimConfig optim;
  TrainConfig train;
  CheckpointConfig checkpoint;
  LogConfig log;
  DistConfig dist;
  EvalConfig eval;
  FinetuneConfig finetune;
};

/// Loads defaults, then `path` (empty = none), then each "a.b=c" override, then
/// validates. Throws UsageError naming the key path, file and line.
Config load(const std::string& path, const std::vector<std::string>& overrides = {});

/// Loads from YAML text (`origin` names it in errors).
Config load_string(const std::string& yaml, const std::string& origin,
                   const std::vector<std::string>& overrides = {});

/// Checks ranges and enumerations; throws UsageError naming the key path.
void validate(const Config& cfg);

/// The named tower sizes, the one list of them: config validation accepts these names
/// and model/presets.cpp builds the towers' Options from these numbers.
struct VisionPresetSizes {
  int64_t embed_dim, image_size, layers, width, patch_size;
};
struct TextPresetSizes {
  int64_t vocab_size, hidden, layers, heads, intermediate, max_position;  ///< vocab 0: tokenizer's
};
const std::vector<std::pair<std::string, VisionPresetSizes>>& vision_presets();
const std::vector<std::pair<std::string, TextPresetSizes>>& text_presets();
/// Preset names whose sizes come from a pretrained tower's files (filled in by
/// io::resolve_pretrained_presets before the model is built): the ViT's from
/// model.init.vision's tensor shapes, the BERT's from model.init.text's config.json.
inline constexpr const char* kVisionFromCheckpoint = "checkpoint";
inline constexpr const char* kTextFromHf = "hf";

/// Every name model.vision.preset / model.text.preset accepts: the tables' names, then
/// kVisionFromCheckpoint / kTextFromHf.
const std::vector<std::string>& vision_preset_names();
const std::vector<std::string>& text_preset_names();

/// The resolved config as YAML (every key, in declaration order).
std::string to_yaml(const Config& cfg);

/// One key whose value differs between two configs: full key path ("model.text.layers")
/// and both values as to_yaml writes them.
struct ConfigChange {
  std::string key, before, after;
};

/// The keys whose values differ between `a` and `b`, in schema order.
std::vector<ConfigChange> diff(const Config& a, const Config& b);

/// Stable hash of the resolved config (hex), stored in checkpoints.
std::string hash(const Config& cfg);

}  // namespace retclip::config
