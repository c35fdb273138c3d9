"""PyTorch oracle of a retclip fine-tuned classifier export (retclip finetune ->
<run>/classifier): builds open_clip's VisionTransformer (QuickGELU) and a torch.nn.Linear
head from classifier.safetensors + retclip.json alone, runs them on the inputs that
`retclip predict --save-inputs` recorded, and compares the probabilities with retclip's
(the CSV and the inputs file). Prints the max difference; exit 1 above the tolerance.
Zero-shot-initialised heads: `normalize` L2-normalises the head input; `per_eye` maps an
eye's feature with left/right_feature_mapping by its laterality (the `<patient>:right` ids)
and takes that eye's half of the head's 2C rows.

  python3 tests/python/finetune_oracle.py CLASSIFIER_DIR INPUTS.safetensors PREDICT.csv [TOL]
"""
import csv
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file


def build(classifier_dir):
    from open_clip.transformer import QuickGELU, VisionTransformer

    side = json.load(open(os.path.join(classifier_dir, "retclip.json")))
    assert side["format"] == "retclip-classifier", side["format"]
    m = side["model"]
    sd = load_file(os.path.join(classifier_dir, side["file"]))
    vit = VisionTransformer(image_size=m["image_size"], patch_size=m["patch_size"], width=m["width"],
                            layers=m["layers"], heads=m["heads"], mlp_ratio=m["mlp_ratio"],
                            output_dim=m["embed_dim"], act_layer=QuickGELU)
    visual = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    missing = vit.load_state_dict(visual, strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    head = torch.nn.Linear(sd["head.weight"].shape[1], sd["head.weight"].shape[0])
    head.load_state_dict({"weight": sd["head.weight"], "bias": sd["head.bias"]})
    def linear(name):
        w = sd[name]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.load_state_dict({"weight": w})
        return lin

    mapping = linear("global_feature_mapping.weight") if "global_feature_mapping.weight" in sd else None
    normalize = m.get("normalize", False)
    per_eye = m.get("per_eye", False)
    if per_eye:
        left_map, right_map = linear("left_feature_mapping.weight"), linear("right_feature_mapping.weight")
    c = m["classes"]
    pre = m["feature"] == "pre_proj"
    if pre:
        vit.proj = None  # the pooled CLS feature, ln_post(x[:, 0])
    vit.eval()

    def forward(inputs):
        if m["level"] == "eye":
            f = vit(inputs["left"])
            if per_eye:
                f = torch.where(inputs["is_right"].unsqueeze(1), right_map(f), left_map(f))
        else:
            b = inputs["left"].shape[0]
            both = vit(torch.cat([inputs["left"], inputs["right"]], 0))
            fl, fr = both[:b], both[b:]
            hl = inputs["has_left"].bool().unsqueeze(1)
            hr = inputs["has_right"].bool().unsqueeze(1)
            l = torch.where(hl, fl, fr)
            r = torch.where(hr, fr, fl)
            f = torch.cat([l, r], 1)
            if not pre:
                f = mapping(f)
        if normalize:
            f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        z = head(f)
        if per_eye:
            z = torch.where(inputs["is_right"].unsqueeze(1), z[:, c:], z[:, :c])
        return torch.sigmoid(z) if m["multi_label"] else torch.softmax(z, 1)

    return forward, side


def main():
    classifier_dir, inputs_path, csv_path = sys.argv[1:4]
    tol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-5
    forward, side = build(classifier_dir)
    inputs = load_file(inputs_path)
    with safe_open(inputs_path, "pt") as f:
        ids = json.loads(f.metadata()["ids"])
    inputs["is_right"] = torch.tensor([i.endswith(":right") for i in ids])
    with torch.no_grad():
        want = forward(inputs)
    rows = list(csv.reader(open(csv_path)))
    assert rows[0][3:] == side["classes"], (rows[0], side["classes"])
    got_csv = torch.tensor([[float(x) for x in r[3:]] for r in rows[1:]])
    got = inputs["probabilities"]
    d_file = (got - want).abs().max().item()
    d_csv = (got_csv - want).abs().max().item()
    print(f"finetune oracle: {want.shape[0]} rows x {want.shape[1]} classes ({side['model']['level']} "
          f"level, {side['model']['feature']}{', zero-shot head' if side['model'].get('normalize') else ''}): max |retclip - open_clip+Linear| = {d_file:.3g} "
          f"(CSV {d_csv:.3g}), tolerance {tol:g}")
    sys.exit(0 if d_file <= tol and d_csv <= tol else 1)


if __name__ == "__main__":
    main()
