#!/usr/bin/env python3
"""The last leg of the user's journey (tests/cli/journey_test.cpp): an export of a run
trained from shards with a sentencepiece tokenizer, loaded by other libraries' one-line
loaders as their users do, against `retclip embed` on the same inputs.

  journey_check.py EXPORT_DIR MANIFEST RETCLIP_BIN WORK_DIR

Writes WORK_DIR/reports.csv: 200 patients whose images come from MANIFEST and whose
reports are MANIFEST's own plus edited ones (punctuation, upper case, numbers, words and
scripts the tokenizer never saw); runs `retclip embed --save-inputs` on it; then checks
- transformers: AutoTokenizer.from_pretrained(EXPORT/hf) gives retclip's token ids exactly,
  AutoModel's [CLS] through the RET-CLIP text heads gives the three text embeddings;
- timm: create_model("local-dir:EXPORT/timm", pretrained=True) through the RET-CLIP image
  heads gives the three image embeddings;
- open_clip: create_model_and_transforms("local-dir:EXPORT/open_clip") gives encode_text ==
  the patient text embedding and encode_image == the patient image embedding of patients
  with that one eye, and its tokenizer encodes zero-shot prompts.
Tolerance 1e-5 (fp32). Prints the max |diff| of every comparison; exits 1 on a mismatch.
"""
import csv
import json
import os
import random
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interop_oracle import PUNCT, ACCENTED, Report, image_embeddings  # noqa: E402

UNSEEN = ["photocoagulation", "xerophthalmia", "Vogt-Koyanagi-Harada", "视网膜出血", "ΔIOP",
          "naevus", "OCT-A", "quadrant", "zzzz", "anti-VEGF"]


def reports_manifest(manifest, out):
    rows = list(csv.DictReader(open(manifest, newline="", encoding="utf-8")))
    base = os.path.dirname(os.path.abspath(manifest))
    rng = random.Random(7)
    reports = [r["report"] for r in rows]
    while len(reports) < 200:
        r = rng.choice(rows)["report"]
        k = rng.random()
        if k < 0.25:
            r = r.upper()
        elif k < 0.5:
            r = f"{r} {rng.choice(PUNCT)} {rng.choice(UNSEEN)}!"
        elif k < 0.75:
            r = f"{rng.choice(ACCENTED)}: {r} ({rng.randint(0, 9999)}/{rng.randint(1, 99)})"
        else:
            r = f"{rng.choice(UNSEEN)}, {r};  {rng.choice(UNSEEN)}?"
        reports.append(r)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "left_image", "right_image", "report"])
        for i, rep in enumerate(reports):
            src = rows[i % len(rows)]
            eye = [os.path.join(base, src[c]) if src[c] else "" for c in ("left_image", "right_image")]
            # Some patients with one eye only: open_clip's encode_image is their patient_img.
            if i % 5 == 1 and eye[1]:
                eye[0] = ""
            elif i % 7 == 2 and eye[0]:
                eye[1] = ""
            w.writerow([f"j{i:03d}", eye[0], eye[1], rep])
    return reports


def main():
    export_dir, manifest, binary, work = sys.argv[1:5]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(work, exist_ok=True)
    m = os.path.join(work, "reports.csv")
    reports = reports_manifest(manifest, m)
    emb_path = os.path.join(work, "reports_emb.safetensors")
    subprocess.run([binary, "embed", "--weights", export_dir, "--manifest", m, "--out", emb_path,
                    "--save-inputs"], check=True)
    emb = load_file(emb_path)
    side = json.load(open(os.path.join(export_dir, "retclip.json")))
    context = side["text"]["context_length"]
    tokens = emb["input_tokens"]
    rep = Report()

    # transformers
    import transformers
    d = os.path.join(export_dir, "hf")
    tok = transformers.AutoTokenizer.from_pretrained(d)
    ids = tok(reports, max_length=context, truncation=True, padding="max_length",
              return_tensors="pt")["input_ids"]
    same = ids.shape == tokens.shape and torch.equal(ids, tokens)
    if not same and ids.shape == tokens.shape:
        bad = [i for i in range(len(reports)) if not torch.equal(ids[i], tokens[i])]
        print(f"first differing report: {reports[bad[0]]!r}\n  hf      {ids[bad[0]].tolist()}\n"
              f"  retclip {tokens[bad[0]].tolist()}")
    rep.exact(f"hf: AutoTokenizer ids ({len(reports)} reports)", same)
    bert = transformers.AutoModel.from_pretrained(d, add_pooling_layer=False)
    bert.eval()
    h = load_file(os.path.join(d, "retclip_heads.safetensors"))

    def proj(x, p):
        return torch.relu(x @ h[p + ".0.weight"].T + h[p + ".0.bias"]) @ h[p + ".2.weight"].T + \
            h[p + ".2.bias"]

    with torch.no_grad():
        cls = bert(input_ids=tokens, attention_mask=(tokens != side["text"]["pad_id"]).long()
                   ).last_hidden_state[:, 0]
    for level, p in (("patient", "text_projection"), ("left", "text_projection_left"),
                     ("right", "text_projection_right")):
        rep.check(f"hf: {level}_txt", F.normalize(proj(cls, p), dim=-1), emb[f"{level}_txt"])

    # timm
    import timm
    d = os.path.join(export_dir, "timm")
    vit = timm.create_model("local-dir:" + d, pretrained=True)
    vit.eval()
    heads = load_file(os.path.join(d, "retclip_heads.safetensors"))
    hl, hr = emb["has_left"].bool(), emb["has_right"].bool()
    with torch.no_grad():
        out = image_embeddings(vit(emb["input_left"]), vit(emb["input_right"]), hl, hr, heads)
    rep.check("timm: left_img", out["left_img"], emb["left_img"], hl)
    rep.check("timm: right_img", out["right_img"], emb["right_img"], hr)
    rep.check("timm: patient_img", out["patient_img"], emb["patient_img"])

    # open_clip: the one line; encode_text is the patient text embedding and encode_image
    # the patient image embedding of a patient with that one eye (the folder's README)
    import open_clip
    d = os.path.join(export_dir, "open_clip")
    model, _, _ = open_clip.create_model_and_transforms("local-dir:" + d)
    model.eval()
    e = emb["patient_txt"].shape[1]
    only_l, only_r = hl & ~hr, hr & ~hl
    rep.exact("open_clip: patients with one eye", bool(only_l.any()) and bool(only_r.any()))
    with torch.no_grad():
        il = model.encode_image(emb["input_left"], normalize=True)
        ir = model.encode_image(emb["input_right"], normalize=True)
        txt = model.encode_text(tokens, normalize=True)
        prompts = open_clip.get_tokenizer("local-dir:" + d)(["no findings", "drusen"])
        zs = model.encode_text(prompts, normalize=True)
    rep.check("open_clip: encode_text = patient_txt", txt[:, :e], emb["patient_txt"])
    rep.check("open_clip: text dims beyond E zero", txt[:, e:], torch.zeros_like(txt[:, e:]))
    rep.check("open_clip: encode_image = patient_img, left only", il[:, :e], emb["patient_img"],
              only_l)
    rep.check("open_clip: encode_image = patient_img, right only", ir[:, :e],
              emb["patient_img"], only_r)
    rep.exact("open_clip: zero-shot prompts encode", tuple(zs.shape) == (2, txt.shape[1]) and
              bool(torch.isfinite(zs).all()))

    print(f"{len(reports)} reports, worst {rep.worst:.3e}")
    if rep.failed:
        print("FAILED: " + ", ".join(rep.failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
