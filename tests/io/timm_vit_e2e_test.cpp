// A timm plain ViT (RETFound-shaped: patch bias, GELU, avg pool + fc_norm, a .pth with a
// `model` key and MAE decoder keys; tests/python/timm_vit_oracle.py) through the retclip
// binary on CPU: RET-CLIP pretraining starts from it (model.vision.preset=checkpoint),
// export --format timm names timm's architecture, `retclip finetune --init <file>` fine-tunes
// it at another image size (position embedding resampled) and `retclip predict` reads the
// classifier, and `retclip features --weights <file>` extracts its features.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../support/finetune.hpp"
#include "../support/interop.hpp"
#include "../support/timm_vit.hpp"
#include "retclip/io/state_dict.hpp"
#include "retclip/util/fs.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace retclip;
using namespace retclip::test;

TEST(TimmVitE2E, TrainsFinetunesAndExtractsFromARetfoundShapedPth) {
  REQUIRE_PYTHON("timm, safetensors");
  std::string err;
  const fs::path fx = timm_vit_fixture(&err);
  ASSERT_TRUE(err.empty()) << err;
  const fs::path pth = fx / "retfound.pth";
  const fs::path root = make_root("timm-vit");
  const fs::path log = root / "commands.log";
  const std::string bin = "OMP_NUM_THREADS=1 " + retclip_bin();
  ASSERT_EQ(run(bin + " synth --out " + (root / "data").string() +
                    " --patients 16 --val 0 --seed 5 --size 48",
                log),
            0)
      << util::read_file(log);
  write_char_vocab(root / "vocab.txt");

  // Pretraining: the tower, its size and architecture from the file; a new projection and
  // the RET-CLIP heads on top.
  const fs::path run_dir = root / "run";
  ASSERT_EQ(
      run(bin + " train --config " RETCLIP_SOURCE_DIR "/configs/tiny-cpu.yaml" +
              " --set model.vision.preset=checkpoint --set model.init.vision=" + pth.string() +
              " --set model.embed_dim=0 --set model.text.preset=bert-micro"
              " --set data.image_size=32 --set data.context_length=32 --set data.train=" +
              (root / "data" / "train.csv").string() + " --set data.val=" +
              " --set data.tokenizer.type=wordpiece --set data.tokenizer.path=" +
              (root / "vocab.txt").string() +
              " --set train.batch_size=8 --set train.steps=2 --set train.threads=1"
              " --set data.workers=1 --set optim.warmup_steps=1"
              " --set checkpoint.every_steps=2 --set log.interval=1 --set log.dir=" +
              run_dir.string(),
          log),
      0)
      << util::read_file(log);
  const std::string train_log = util::read_file(log);
  EXPECT_NE(train_log.find("vision: timm ViT-128w/8, GELU, avg pool + fc_norm, 2 layers, 32 px, "
                           "from " +
                           pth.string()),
            std::string::npos)
      << train_log;
  EXPECT_NE(train_log.find("ignored: head.weight, head.bias, mask_token, decoder_embed.weight"),
            std::string::npos)
      << train_log;
  const std::string resolved = util::read_file(run_dir / "config.yaml");
  for (const char* line : {"    patch_bias: true\n", "    norm_pre: false\n",
                           "    pool: avg_fc_norm\n", "  embed_dim: 128\n"})
    EXPECT_NE(resolved.find(line), std::string::npos) << line << " not in\n" << resolved;

  // export --format timm: the plain ViT family's base architecture with every option.
  ASSERT_EQ(run(bin + " export --checkpoint " + run_dir.string() + " --out " +
                    (root / "export").string() + " --format retclip,timm",
                log),
            0)
      << util::read_file(log);
  const json cfg = json::parse(util::read_file(root / "export" / "timm" / "config.json"));
  EXPECT_EQ(cfg.at("architecture"), "vit_base_patch16_224");
  EXPECT_EQ(cfg.at("model_args").at("global_pool"), "avg");
  EXPECT_EQ(cfg.at("model_args").at("fc_norm"), true);
  EXPECT_EQ(cfg.at("model_args").at("act_layer"), "gelu");

  // Fine-tuning from the file at 48 px: the 4x4 position grid resampled to 6x6.
  const fs::path labels = synth_labelled(root / "ft", 30);
  const fs::path ft = root / "finetune";
  ASSERT_EQ(run(bin + " finetune --init " + pth.string() +
                    " --set model.vision.pool=avg_fc_norm --set data.image_size=48"
                    " --set finetune.data=" +
                    labels.string() +
                    " --set finetune.level=eye --set finetune.epochs=1 --set finetune.batch_size=8"
                    " --set finetune.warmup_epochs=0 --set train.device=cpu --set train.threads=1"
                    " --set data.workers=1 --set log.tensorboard=false --set log.dir=" +
                    ft.string(),
                log),
            0)
      << util::read_file(log);
  EXPECT_NE(util::read_file(log).find("resampling visual.positional_embedding from a 4x4 to a "
                                      "6x6 patch grid"),
            std::string::npos)
      << util::read_file(log);
  EXPECT_TRUE(fs::exists(ft / "results.json"));
  ASSERT_EQ(run(bin + " predict --weights " + (ft / "classifier").string() + " --manifest " +
                    labels.string() + " --out " + (root / "probs.csv").string() + " --device cpu",
                log),
            0)
      << util::read_file(log);

  // Features straight from the file.
  ASSERT_EQ(run(bin + " features --weights " + pth.string() + " --data " + labels.string() +
                    " --level eye --out " + (root / "feats.safetensors").string() + " --device cpu",
                log),
            0)
      << util::read_file(log);
  const io::StateDict f = io::load_weights(root / "feats.safetensors");
  bool width64 = false;
  for (const auto& [k, v] : f)
    if (v.dim() == 2 && v.size(1) == 128) width64 = true;
  EXPECT_TRUE(width64) << "expected [N, 128] pre-projection features";
}
