"""Checks `retclip export` + `retclip embed` against the PyTorch reference model.

usage: embed_check.py EXPORT_DIR EMBEDDINGS.safetensors
The embeddings file must come from `retclip embed --save-inputs`: it holds the
preprocessed inputs (input_left, input_right, input_tokens) next to the six embeddings.
The exported full.safetensors is loaded into model_reference.RetClipReference (HF BERT +
open_clip ViT + RET-CLIP heads), run on the same inputs, and every embedding must match
within 1e-5 (fp32). Prints the max |diff| per tensor; exits 1 on a mismatch.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_reference import RetClipReference, load_params  # noqa: E402

TOL = 1e-5


def main():
    export_dir, emb_path = sys.argv[1:3]
    side = json.load(open(os.path.join(export_dir, "retclip.json")))
    v, t = side["vision"], side["text"]
    cfg = dict(embed_dim=side["embed_dim"], hidden=t["hidden"], vocab_size=t["vocab_size"],
               text_layers=t["layers"], text_heads=t["heads"], intermediate=t["intermediate"],
               max_position=t["max_position"], image_size=v["image_size"], patch_size=v["patch_size"],
               width=v["width"], vision_layers=v["layers"], vision_heads=v["heads"])
    model = RetClipReference(cfg)
    load_params(model, load_file(os.path.join(export_dir, side["files"]["full"])))
    model.eval()
    emb = load_file(emb_path)
    with torch.no_grad():
        out = model(emb["input_left"], emb["input_right"], emb["input_tokens"],
                    emb["has_left"].bool(), emb["has_right"].bool())
    worst = 0.0
    for name in ("patient_img", "left_img", "right_img", "patient_txt", "left_txt", "right_txt"):
        d = (out[name] - emb[name]).abs().max().item()
        worst = max(worst, d)
        print(f"{name:12s} max |diff| {d:.3e}")
    print(f"{len(emb['patient_img'])} patients, worst {worst:.3e} (tolerance {TOL})")
    sys.exit(0 if worst <= TOL else 1)


if __name__ == "__main__":
    main()
