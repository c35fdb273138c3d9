#!/usr/bin/env python3
"""Files the documented commands read that a user brings themselves, made in the docs
test's scratch directory (the current directory) from the synthetic set in data/:

- labels.csv: a labelled set with train / val / test rows (the synthetic patients with
  their per-eye and patient labels; the split column re-drawn 60/20/20 by patient);
- vocab.txt: a BERT-style WordPiece vocabulary (the special tokens, the characters of
  docs/TOKENIZERS.md's example and the words of the reports);
- my.yaml and configs/my.yaml: "your config", the tiny CPU preset on the packed shards
  for 2 steps.
"""
import csv
import os
import re

rows = []
for split in ("train", "val"):
    with open(os.path.join("data", f"{split}.csv"), newline="") as f:
        rows += list(csv.DictReader(f))
with open("labels.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    for i, r in enumerate(rows):
        r = dict(r)
        r["left_image"] = os.path.join("data", r["left_image"]) if r["left_image"] else ""
        r["right_image"] = os.path.join("data", r["right_image"]) if r["right_image"] else ""
        r["split"] = ("train", "train", "train", "val", "test")[i % 5]
        w.writerow(r)

words = sorted({w for r in rows for w in re.findall(r"[a-z]+|[0-9]+", r["report"].lower())})
with open("vocab.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("左眼右：玻璃膜疣。，")
                      + list(".,:;()") + words) + "\n")

config = """# the tiny CPU preset on the packed shards, 2 steps (the docs' configs/my.yaml)
model:
  vision: {preset: vit-tiny}
  text: {preset: bert-tiny, dropout: 0.0}
  embed_dim: 128
data:
  train: shards/train
  image_size: 64
  context_length: 64
  tokenizer: {type: sentencepiece, path: tok.model}
  workers: 1
train: {steps: 2, batch_size: 8, device: cpu, threads: 1, val_every: 0}
checkpoint: {every_steps: 2}
log: {dir: runs/my, interval: 1, tensorboard: false}
"""
for p in ("my.yaml", os.path.join("configs", "my.yaml")):
    with open(p, "w") as f:
        f.write(config)
