"""PyTorch eager fine-tuning step, the reference `scripts/bench_finetune.sh` times
`retclip finetune` against: open_clip's VisionTransformer (QuickGELU, RET-CLIP sizes) with a
linear head on the pooled CLS feature, AdamW over layer-wise lr decay groups (as RETFound's
param_groups_lrd), drop-path off, soft-target cross-entropy with label smoothing, one
optimizer step per batch of random images; bf16 autocast on CUDA when asked. Prints one
JSON line with images/s over the timed steps.

  python3 bench/bench_finetune.py --image-size 64 --patch 8 --width 128 --layers 4 \
      --heads 2 --embed 128 --classes 5 --batch 32 --steps 20 --warmup 3 --threads 2
"""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    for k, v in [("image-size", 64), ("patch", 8), ("width", 128), ("layers", 4), ("heads", 2),
                 ("embed", 128), ("classes", 5), ("batch", 32), ("steps", 20), ("warmup", 3),
                 ("threads", 0)]:
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layer-decay", type=float, default=0.65)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    from open_clip.transformer import QuickGELU, VisionTransformer

    dev = torch.device(a.device)
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=a.image_size, patch_size=a.patch, width=a.width,
                            layers=a.layers, heads=a.heads, mlp_ratio=4.0, output_dim=a.embed,
                            act_layer=QuickGELU)
    vit.proj = None  # pooled CLS feature, as finetune.feature=pre_proj
    head = torch.nn.Linear(a.width, a.classes)
    model = torch.nn.ModuleDict({"visual": vit, "head": head}).to(dev).train()

    def layer_id(n):
        if n.startswith(("visual.conv1", "visual.class_embedding", "visual.positional_embedding",
                         "visual.ln_pre")):
            return 0
        if n.startswith("visual.transformer.resblocks."):
            return int(n.split(".")[3]) + 1
        return a.layers + 1

    groups = {}
    for n, p in model.named_parameters():
        nd = p.ndim < 2 or "bias" in n or "ln" in n or "embedding" in n
        key = (layer_id(n), nd)
        g = groups.setdefault(key, {"params": [], "weight_decay": 0.0 if nd else 0.05,
                                    "lr": 1e-3 * a.layer_decay ** (a.layers + 1 - key[0])})
        g["params"].append(p)
    opt = torch.optim.AdamW(list(groups.values()), betas=(0.9, 0.999), eps=1e-8,
                            fused=dev.type == "cuda")
    x = torch.randn(a.batch, 3, a.image_size, a.image_size, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    t = torch.nn.functional.one_hot(y, a.classes).float() * 0.9 + 0.1 / a.classes

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = model["head"](model["visual"](x))
        loss = -(t * torch.log_softmax(logits.float(), 1)).sum(1).mean()
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    s = time.perf_counter() - t0
    print(json.dumps({"impl": "pytorch-eager", "images_per_s": a.batch * a.steps / s,
                      "step_ms": 1000 * s / a.steps, "batch": a.batch, "steps": a.steps,
                      "precision": a.precision, "device": a.device,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
