"""PyTorch eager baseline for bench_model: the same RET-CLIP step (forward, tripartite
loss, backward) with the reference model of tests/python/model_reference.py
(open_clip ViT + HF BertModel + RET-CLIP heads). Prints one JSON line.

usage: bench_model.py VISION_PRESET TEXT_PRESET VOCAB BATCH TOKENS THREADS STEPS
"""
import json
import os
import resource
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
    left, right = torch.randn(batch, 3, s, s), torch.randn(batch, 3, s, s)
    tok = torch.randint(1, vocab, (batch, tokens))
    ones = torch.ones(batch, dtype=torch.bool)
    smax = 4.6051701859880914

    def step():
        model.zero_grad()
        f = model(left, right, tok, ones, ones)
        total = (level_loss(f["patient_img"], f["patient_txt"], model.logit_scale, ones, smax)
                 + level_loss(f["left_img"], f["left_txt"], model.logit_scale_left, ones, smax)
                 + level_loss(f["right_img"], f["right_txt"], model.logit_scale_right, ones, smax))
        total.backward()
        return total.item()

    step()  # warm-up, not timed
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    ms = (time.perf_counter() - t0) * 1000 / steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "pytorch-eager", "vision": vision, "text": text, "batch": batch,
                      "tokens": tokens, "threads": torch.get_num_threads(), "steps": steps,
                      "ms_per_step": round(ms, 1), "peak_rss_mib": round(rss)}))


if __name__ == "__main__":
    main()
