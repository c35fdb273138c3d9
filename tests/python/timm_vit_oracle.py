#!/usr/bin/env python3
"""Oracle for retclip's timm ViT towers (tests/io/timm_vit_oracle_test.cpp and the CLI
tests): small random timm VisionTransformers of the three kinds retclip imports, their
features, and timm's position-embedding resampling. Nothing is downloaded.

  timm_vit_oracle.py make OUT_DIR
      For KIND in clip, retfound, dinov2 writes a random timm model of width 128, 2 heads
      (head width 64, the rule shapes cannot tell apart), 2 blocks (every tensor random,
      LayerNorm and layer-scale gammas included):
        clip      CLIP-shaped: norm_pre, no patch bias, QuickGELU, LayerNorm eps 1e-5, token
                  pool, 32 px, patch 8 -> OUT/clip.safetensors (timm keys, no head)
        retfound  RETFound-shaped: patch bias, no norm_pre, GELU, eps 1e-6, avg pool +
                  fc_norm, a 5-class head (bias not zero), 32 px, patch 8 ->
                  OUT/retfound.pth, torch.save({"model": weights + MAE decoder keys
                  (decoder_*) + mask_token, "epoch": 3})
        dinov2    DINOv2-shaped: 4 register tokens, layer scale, no_embed_class, GELU, eps
                  1e-6, token pool, 28 px, patch 7 -> OUT/dinov2.safetensors
      and OUT/KIND_io.safetensors: images [2, 3, S, S] and feature [2, D] =
      forward_head(forward_features(images), pre_logits=True), in float32, eval mode.
      OUT/retfound_48_io.safetensors: the RETFound-shaped model created at 48 px from the
      32 px weights through timm's checkpoint_filter_fn (position embedding resampled),
      images [2, 3, 48, 48] and its feature.
      OUT/resample.safetensors: timm.layers.resample_abs_pos_embed of a [1, 5+4*4, 128]
      embedding to grids 6 and 3 with 5 prefix rows (pe, to6, to3), and of a
      [1, 1+4*4, 128] one to grid 7 with 1 (pe1, to7).
      OUT/manifest.json {kind: {"file", "image_size", "width", "layers"}}.
  timm_vit_oracle.py roundtrip TIMM_DIR KIND FIXTURE_DIR [ARCH]
      timm.create_model("local-dir:TIMM_DIR", pretrained=True) (with ARCH given, the
      folder's config.json must name that architecture), its pre-logits feature on
      FIXTURE_DIR/KIND_io.safetensors' images equals the original timm model's within
      1e-5. Exits 1 otherwise.
  timm_vit_oracle.py retfound-file PATH
      A small stand-in for a RETFound MAE release (what docs/WEIGHTS.md's example is run
      with): a random timm ViT at 224 px, patch 16, width 64 (1 head), 2 layers, with the MAE
      encoder's final `norm`, no head, plus MAE decoder keys and mask_token, saved as
      torch.save({"model": ...}, PATH).
Prints the max |diff| of every comparison.
"""
import json
import os
import sys
from functools import partial

import torch
from safetensors.torch import load_file, save_file

TOL = 1e-5


def build(kind, img_size=None):
    from timm.layers import LayerNorm
    from timm.models.vision_transformer import VisionTransformer
    if kind == "clip":
        return VisionTransformer(img_size=img_size or 32, patch_size=8, embed_dim=128, depth=2,
                                 num_heads=2, pre_norm=True, num_classes=0,
                                 norm_layer=partial(LayerNorm, eps=1e-5), act_layer="quick_gelu")
    if kind == "retfound":
        return VisionTransformer(img_size=img_size or 32, patch_size=8, embed_dim=128, depth=2,
                                 num_heads=2, global_pool="avg", fc_norm=True, num_classes=5)
    if kind == "dinov2":
        return VisionTransformer(img_size=img_size or 28, patch_size=7, embed_dim=128, depth=2,
                                 num_heads=2, init_values=1e-5, reg_tokens=4,
                                 no_embed_class=True, num_classes=0)
    raise SystemExit(f"unknown kind {kind}")


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # layer scale: far from its 1e-5 start
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
            elif p.dim() == 1 and ("norm" in name):
                p.copy_((1.0 if name.endswith("weight") else 0.0) +
                        0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def features(model, images):
    model.eval()
    with torch.no_grad():
        return model.forward_head(model.forward_features(images), pre_logits=True)


def make(out):
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(24)
    manifest = {}
    models = {}
    for kind in ("clip", "retfound", "dinov2"):
        model = build(kind)
        randomize(model, gen)
        models[kind] = model
        size = model.patch_embed.img_size[0]
        images = torch.randn(2, 3, size, size, generator=gen)
        feat = features(model, images)
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        if kind == "retfound":
            # What an MAE pretraining checkpoint carries beside the encoder.
            sd["mask_token"] = torch.randn(1, 1, 32, generator=gen)
            sd["decoder_embed.weight"] = torch.randn(32, 128, generator=gen)
            sd["decoder_embed.bias"] = torch.randn(32, generator=gen)
            sd["decoder_pos_embed"] = torch.randn(1, 17, 32, generator=gen)
            sd["decoder_blocks.0.norm1.weight"] = torch.randn(32, generator=gen)
            sd["decoder_norm.weight"] = torch.randn(32, generator=gen)
            sd["decoder_pred.weight"] = torch.randn(192, 32, generator=gen)
            sd["decoder_pred.bias"] = torch.randn(192, generator=gen)
            name = "retfound.pth"
            torch.save({"model": sd, "epoch": 3}, os.path.join(out, name))
        else:
            name = f"{kind}.safetensors"
            save_file(sd, os.path.join(out, name))
        save_file({"images": images, "feature": feat.contiguous()},
                  os.path.join(out, f"{kind}_io.safetensors"))
        manifest[kind] = {"file": name, "image_size": size, "width": 128, "layers": 2}
        print(f"{kind}: {name}, feature {tuple(feat.shape)}")

    # timm's own path for a checkpoint at another size: checkpoint_filter_fn resamples.
    from timm.models.vision_transformer import checkpoint_filter_fn
    big = build("retfound", img_size=48)
    big.load_state_dict(checkpoint_filter_fn(models["retfound"].state_dict(), big))
    images = torch.randn(2, 3, 48, 48, generator=gen)
    save_file({"images": images, "feature": features(big, images).contiguous()},
              os.path.join(out, "retfound_48_io.safetensors"))

    from timm.layers import resample_abs_pos_embed
    pe = torch.randn(1, 5 + 16, 128, generator=gen)
    pe1 = torch.randn(1, 1 + 16, 128, generator=gen)
    save_file({"pe": pe, "to6": resample_abs_pos_embed(pe, [6, 6], num_prefix_tokens=5),
               "to3": resample_abs_pos_embed(pe, [3, 3], num_prefix_tokens=5),
               "pe1": pe1, "to7": resample_abs_pos_embed(pe1, [7, 7], num_prefix_tokens=1)},
              os.path.join(out, "resample.safetensors"))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def roundtrip(timm_dir, kind, fixture_dir, arch=None):
    import timm
    with open(os.path.join(timm_dir, "config.json")) as f:
        cfg = json.load(f)
    if arch and cfg["architecture"] != arch:
        print(f"{kind}: config.json names {cfg['architecture']}, expected {arch}")
        return 1
    model = timm.create_model("local-dir:" + os.path.abspath(timm_dir), pretrained=True)
    io = load_file(os.path.join(fixture_dir, f"{kind}_io.safetensors"))
    got = features(model, io["images"])
    diff = (got - io["feature"]).abs().max().item()
    print(f"{kind}: timm {cfg['architecture']} from {timm_dir}: max |diff| {diff:.3e} "
          f"(feature {tuple(got.shape)})")
    return 0 if diff <= TOL else 1


def retfound_file(path):
    from timm.models.vision_transformer import VisionTransformer
    gen = torch.Generator().manual_seed(7)
    model = VisionTransformer(img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=1,
                              num_classes=0)
    randomize(model, gen)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["mask_token"] = torch.zeros(1, 1, 32)
    sd["decoder_embed.weight"] = torch.randn(32, 64, generator=gen)
    sd["decoder_pos_embed"] = torch.randn(1, 197, 32, generator=gen)
    sd["decoder_norm.weight"] = torch.ones(32)
    sd["decoder_pred.weight"] = torch.randn(768, 32, generator=gen)
    torch.save({"model": sd}, path)
    print(f"{path}: RETFound-shaped MAE checkpoint, {len(sd)} tensors")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "retfound-file":
        retfound_file(sys.argv[2])
        return 0
    if len(sys.argv) >= 3 and sys.argv[1] == "make":
        make(sys.argv[2])
        return 0
    if len(sys.argv) in (5, 6) and sys.argv[1] == "roundtrip":
        return roundtrip(*sys.argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
