#!/usr/bin/env python3
"""Oracle fixtures for retclip's io module (tests/io/io_oracle_test.cpp).

  io_make_fixtures.py make DIR    write files with PyTorch / safetensors / transformers
                                  / open_clip and the values C++ must read from them
  io_make_fixtures.py check DIR   read the files C++ wrote (cpp_*.safetensors) with the
                                  Python safetensors library; exit 1 on any mismatch

Everything is built from seeded random weights; nothing is downloaded.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def dtype_tensors():
    g = torch.Generator().manual_seed(1234)
    out = {}
    for code, dt in DTYPES.items():
        if dt.is_floating_point:
            t = torch.randn(3, 5, generator=g).to(dt)
        elif dt == torch.bool:
            t = torch.randint(0, 2, (3, 5), generator=g).bool()
        elif dt == torch.uint8:
            t = torch.randint(0, 256, (3, 5), generator=g).to(dt)
        else:
            t = torch.randint(-1000, 1000, (3, 5), generator=g).to(dt)
        out[f"t_{code}"] = t
    out["scalar"] = torch.tensor(3.25)
    out["empty"] = torch.zeros(0, 4)
    out["vector.long.name.with.dots"] = torch.arange(7, dtype=torch.int64)
    return out


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.norm = torch.nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(self.bn(self.fc(x)))


def make(d):
    os.makedirs(d, exist_ok=True)
    # 1. safetensors written by the Python library, and the bytes C++ must find.
    ts = dtype_tensors()
    save_file(ts, os.path.join(d, "py_dtypes.safetensors"), metadata={"format": "pt"})
    expected = {k: {"dtype": [c for c, dt in DTYPES.items() if dt == v.dtype][0],
                    "shape": list(v.shape),
                    "hex": v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes().hex() if v.numel() else ""}
                for k, v in ts.items()}
    with open(os.path.join(d, "py_dtypes_expected.json"), "w") as f:
        json.dump(expected, f)

    # 2. torch.save archives: plain state_dict, and nested + DDP prefix + optimizer state.
    torch.manual_seed(0)
    m = Small()
    m.train()
    m(torch.randn(8, 6))  # updates BatchNorm running stats and num_batches_tracked
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(8, 6)).sum().backward()
    opt.step()
    sd = m.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(d, "ref_small.safetensors"))
    torch.save(sd, os.path.join(d, "small_plain.pt"))
    torch.save({"epoch": 3, "name": "run",
                "state_dict": {"module." + k: v for k, v in sd.items()},
                "optimizer": opt.state_dict()}, os.path.join(d, "small_nested.pt"))
    # Views sharing one storage, several dtypes, and foreign objects next to the weights
    # (argparse namespace, numpy scalar, a set) as training scripts save them.
    import argparse
    import numpy as np
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"base": base, "row_slice": base[1:3], "transposed": base.t(), "column": base[:, 2],
             "half": torch.randn(3, 2).half(), "bf16": torch.randn(5).bfloat16(),
             "long": torch.arange(4), "flag": torch.tensor([True, False]), "scalar": torch.tensor(7.5),
             "empty": torch.zeros(0, 3)}
    save_file({k: v.clone().contiguous() for k, v in views.items()}, os.path.join(d, "ref_views.safetensors"))
    torch.save({"model": views, "args": argparse.Namespace(lr=0.1, name="x"),
                "best": np.float64(0.5), "seen": {1, 2}, "steps": [1, 2.5, None, (3, "a")],
                "big": 2 ** 40, "neg": -5},
               os.path.join(d, "views_nested.pt"))
    # 3. TorchScript archive of the same module.
    torch.jit.script(m).save(os.path.join(d, "small_scripted.pt"))
    torch.jit.trace(m.eval(), torch.randn(2, 6)).save(os.path.join(d, "small_traced.pt"))

    # 4. Hugging Face BERT, safetensors and pytorch_model.bin, BertModel and BertForMaskedLM.
    from transformers import BertConfig, BertForMaskedLM, BertModel
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=24, type_vocab_size=2)
    torch.manual_seed(1)
    bert = BertModel(cfg)
    bert.save_pretrained(os.path.join(d, "hf_bert_st"))
    # transformers 5 always writes safetensors; pytorch_model.bin is what 4.x wrote with
    # safe_serialization=False: torch.save of the state dict.
    os.makedirs(os.path.join(d, "hf_bert_bin"), exist_ok=True)
    torch.save(bert.state_dict(), os.path.join(d, "hf_bert_bin", "pytorch_model.bin"))
    ref = {"bert." + k: v.contiguous() for k, v in bert.state_dict().items()
           if not k.startswith("pooler.") and not k.endswith("position_ids")}
    save_file(ref, os.path.join(d, "ref_bert.safetensors"))
    torch.manual_seed(2)
    mlm = BertForMaskedLM(cfg)
    mlm.save_pretrained(os.path.join(d, "hf_mlm_st"))
    ref = {"bert." + k: v.contiguous() for k, v in mlm.bert.state_dict().items()
           if not k.startswith("pooler.") and not k.endswith("position_ids")}
    save_file(ref, os.path.join(d, "ref_mlm.safetensors"))

    # 5. Positional-embedding resize (OpenCLIP resize_pos_embed arithmetic).
    g = torch.Generator().manual_seed(5)
    pe = torch.randn(1 + 7 * 7, 16, generator=g)
    out = {"in": pe}
    for grid in (10, 4):
        for aa in (True, False):
            img = pe[1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
            img = F.interpolate(img, size=(grid, grid), mode="bicubic", antialias=aa, align_corners=False)
            img = img.permute(0, 2, 3, 1).reshape(grid * grid, -1)
            out[f"g{grid}{'_aa' if aa else ''}"] = torch.cat([pe[:1], img], 0).contiguous()
    save_file(out, os.path.join(d, "pe_resize.safetensors"))

    # 6. A tiny OpenCLIP ViT saved as OpenCLIP training does (module. prefix under
    #    "state_dict"), and the visual tower resized to a 6x6 grid by open_clip itself.
    try:
        import open_clip
        from open_clip.model import CLIP, resize_pos_embed
    except Exception as e:  # open_clip is optional for this oracle
        print(f"open_clip unavailable ({e}); skipping the OpenCLIP fixture")
        return
    vision = dict(layers=2, width=64, head_width=32, patch_size=8, image_size=32)
    text = dict(context_length=8, vocab_size=50, width=32, heads=2, layers=1)
    torch.manual_seed(3)
    clip = CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text)
    csd = clip.state_dict()
    torch.save({"epoch": 1, "name": "tiny", "state_dict": {"module." + k: v for k, v in csd.items()}},
               os.path.join(d, "openclip_tiny.pt"))
    big = CLIP(embed_dim=16, vision_cfg=dict(vision, image_size=48), text_cfg=text)
    resized = dict(csd)
    resize_pos_embed(resized, big)
    save_file({k: v.contiguous() for k, v in resized.items() if k.startswith("visual.")},
              os.path.join(d, "ref_openclip_visual_g6.safetensors"))
    print("open_clip", open_clip.__version__)


def check(d):
    bad = []
    ref = load_file(os.path.join(d, "py_dtypes.safetensors"))
    got = load_file(os.path.join(d, "cpp_dtypes.safetensors"))
    with safe_open(os.path.join(d, "cpp_dtypes.safetensors"), "pt") as f:
        meta = f.metadata()
    if meta != {"format": "pt", "writer": "retclip"}:
        bad.append(f"metadata {meta}")
    if set(ref) != set(got):
        bad.append(f"names differ: {sorted(set(ref) ^ set(got))}")
    for k in ref:
        if k in got and (ref[k].dtype != got[k].dtype or ref[k].shape != got[k].shape
                         or not torch.equal(ref[k], got[k])):
            bad.append(f"tensor {k} differs")
    # Tensors generated in C++ with known values.
    gen = load_file(os.path.join(d, "cpp_generated.safetensors"))
    want = {"arange_f32": torch.arange(12, dtype=torch.float32).reshape(3, 4),
            "arange_bf16": torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16),
            "ones_bool": torch.ones(2, 2, dtype=torch.bool),
            "minus_i64": -torch.arange(5, dtype=torch.int64)}
    for k, v in want.items():
        if k not in gen or gen[k].dtype != v.dtype or not torch.equal(gen[k], v):
            bad.append(f"generated {k}: {gen.get(k)}")
    for b in bad:
        print("MISMATCH:", b)
    print(f"checked {len(ref) + len(want)} tensors, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "check"):
        print(__doc__)
        sys.exit(2)
    sys.exit(make(sys.argv[2]) or 0 if sys.argv[1] == "make" else check(sys.argv[2]))
