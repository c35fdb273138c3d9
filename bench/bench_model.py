"""PyTorch eager baseline for bench_model: the same RET-CLIP steps with the reference
model of tests/python/model_reference.py (open_clip ViT + HF BertModel + RET-CLIP heads).
Three kinds of step alternate, so that load noise hits them alike (wall and process CPU
time are both recorded):
  fwd_bwd      zero_grad, forward, tripartite loss, backward
  train        the same + torch.optim.AdamW step, default implementation (on CPU: the
               per-parameter for-loop, foreach=None, fused=None)
  train_fused  the same with torch.optim.AdamW(fused=True) (the CPU fused kernel)
The optimizers use retclip's groups and defaults (lr 3e-5, betas 0.9/0.98, eps 1e-6,
wd 0.001 on the decay group; no decay on <2-D / bn / ln / bias / logit_scale and the
optim.no_decay names). Prints one JSON line with per-step times and their medians.

usage: bench_model.py VISION_PRESET TEXT_PRESET VOCAB BATCH TOKENS THREADS STEPS
"""
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
from model_reference import RetClipReference, level_loss  # noqa: E402

VISION = {"ViT-B-16": (512, 224, 12, 768, 16), "ViT-L-14": (768, 224, 24, 1024, 14),
          "ViT-S-8": (512, 224, 12, 384, 8), "vit-tiny": (128, 64, 4, 128, 8),
          "vit-micro": (32, 32, 2, 64, 8)}
TEXT = {"RoBERTa-wwm-ext-base-chinese": (768, 12, 12, 3072, 512),
        "RBT3-chinese": (768, 3, 12, 3072, 512), "bert-base-uncased": (768, 12, 12, 3072, 512),
        "bert-tiny": (128, 2, 2, 512, 128), "bert-micro": (64, 2, 2, 128, 64)}
# retclip's no-decay rule (src/train/optimizer.cpp + config OptimConfig::no_decay).
NO_DECAY = ["bn", "ln", "bias", "logit_scale", "LayerNorm", "ln_", "class_embedding",
            "positional_embedding", "position_embeddings"]


def adamw(model, **kw):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or any(s in n for s in NO_DECAY) else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.001},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=3e-5, betas=(0.9, 0.98), eps=1e-6, **kw)


def main():
    vision, text = sys.argv[1], sys.argv[2]
    vocab, batch, tokens, threads, steps = map(int, sys.argv[3:8])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    e, s, vl, w, p = VISION[vision]
    h, tl, th, ffn, mp = TEXT[text]
    cfg = dict(embed_dim=e, image_size=s, vision_layers=vl, width=w, patch_size=p,
               vision_heads=max(1, w // 64), vocab_size=vocab, hidden=h, text_layers=tl,
               text_heads=th, intermediate=ffn, max_position=mp)
    model = RetClipReference(cfg).train()
    opt = adamw(model)
    opt_fused = adamw(model, fused=True)
    left, right = torch.randn(batch, 3, s, s), torch.randn(batch, 3, s, s)
    tok = torch.randint(1, vocab, (batch, tokens))
    ones = torch.ones(batch, dtype=torch.bool)
    smax = 4.6051701859880914

    def fwd_bwd():
        f = model(left, right, tok, ones, ones)
        total = (level_loss(f["patient_img"], f["patient_txt"], model.logit_scale, ones, smax)
                 + level_loss(f["left_img"], f["left_txt"], model.logit_scale_left, ones, smax)
                 + level_loss(f["right_img"], f["right_txt"], model.logit_scale_right, ones, smax))
        total.backward()
        return total.item()

    def step_fwd_bwd():
        model.zero_grad()
        return fwd_bwd()

    def step_train(o):
        o.zero_grad()
        loss = fwd_bwd()
        o.step()
        return loss

    step_fwd_bwd()  # warm-up, not timed
    step_train(opt)
    step_train(opt_fused)
    times = {k: [] for k in ("fwd_bwd_ms", "train_ms", "train_fused_ms", "fwd_bwd_cpu_ms",
                             "train_cpu_ms", "train_fused_cpu_ms")}
    for _ in range(steps):
        for key, fn in (("fwd_bwd", step_fwd_bwd), ("train", lambda: step_train(opt)),
                        ("train_fused", lambda: step_train(opt_fused))):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[key + "_ms"].append(round((time.perf_counter() - t0) * 1000, 1))
            times[key + "_cpu_ms"].append(round((time.process_time() - c0) * 1000, 1))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"impl": "pytorch-eager", "vision": vision, "text": text, "batch": batch,
           "tokens": tokens, "threads": torch.get_num_threads(), "steps": steps}
    out.update(times)
    for key, v in times.items():
        out[key.replace("_ms", "_median_ms")] = round(statistics.median(v), 1)
    out["peak_rss_mib"] = round(rss)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
