"""Loader benchmark helpers (not a test, not product code).

  gen   : writes fundus-like JPEG pairs + manifest.csv (PIL), the shared input of every mode.
  torch : the baseline, a PyTorch DataLoader (2 workers) doing the same work as retclip's
          JPEG path: PIL decode, field-of-view crop, pad to square, resize, then
          RandomResizedCrop(scale 0.9-1) + ColorJitter(0.2) + ToTensor + Normalize +
          RandomErasing(0.1), both eyes per patient. Prints one JSON line.
"""
import argparse
import csv
import gc
import json
import os
import resource
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def fundus_like(rng, px, left):
    """A retina-like disc on black: orange background, optic disc, vessels, texture."""
    img = Image.new("RGB", (px, px), (0, 0, 0))
    d = ImageDraw.Draw(img)
    r = int(px * 0.46)
    c = px // 2
    base = tuple(int(v) for v in rng.integers([150, 60, 20], [210, 100, 50]))
    d.ellipse([c - r, c - r, c + r, c + r], fill=base)
    odx = c + (-1 if left else 1) * int(r * 0.45)
    d.ellipse([odx - px // 18, c - px // 18, odx + px // 18, c + px // 18], fill=(240, 200, 140))
    for _ in range(14):
        pts = [(odx, c)]
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(6):
            ang += rng.normal(0, 0.3)
            x, y = pts[-1]
            pts.append((x + np.cos(ang) * r / 6, y + np.sin(ang) * r / 6))
        d.line(pts, fill=(110, 25, 15), width=max(2, px // 200))
    img = img.filter(ImageFilter.GaussianBlur(px / 400))
    a = np.asarray(img).astype(np.int16)
    a += rng.integers(-6, 7, size=a.shape, dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def gen(args):
    os.makedirs(os.path.join(args.out, "img"), exist_ok=True)
    rng = np.random.default_rng(0)
    with open(os.path.join(args.out, "manifest.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "left_image", "right_image", "report"])
        for i in range(args.patients):
            names = []
            for eye in ("L", "R"):
                name = f"img/p{i:05d}_{eye}.jpg"
                fundus_like(rng, args.px, eye == "L").save(os.path.join(args.out, name),
                                                           quality=90)
                names.append(name)
            w.writerow([f"P{i:05d}", names[0], names[1], "left eye: normal. right eye: normal."])


def fov_square(img, size):
    """Crop to the bright field of view, pad to square with black, resize (area)."""
    a = np.asarray(img)
    mask = a.max(axis=2) > 20
    ys, xs = np.nonzero(mask)
    a = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = a.shape[:2]
    s = max(h, w)
    sq = np.zeros((s, s, 3), np.uint8)
    sq[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = a
    return Image.fromarray(sq).resize((size, size), Image.BOX)


class PairDataset:
    def __init__(self, manifest, size):
        import torchvision.transforms as T
        root = os.path.dirname(os.path.abspath(manifest))
        with open(manifest) as f:
            self.rows = [(os.path.join(root, r["left_image"]), os.path.join(root, r["right_image"]))
                         for r in csv.DictReader(f)]
        self.size = size
        self.tf = T.Compose([
            T.RandomResizedCrop(size, scale=(0.9, 1.0)),
            T.ColorJitter(0.2, 0.2, 0.2),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
            T.RandomErasing(p=0.1),
        ])

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        out = []
        for p in self.rows[i]:
            img = Image.open(p).convert("RGB")
            out.append(self.tf(fov_square(img, self.size)))
        return out[0], out[1]


def bench_torch(args):
    import torch
    torch.set_num_threads(1)
    ds = PairDataset(args.manifest, args.size)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True,
                                     num_workers=args.workers, drop_last=True,
                                     persistent_workers=True, prefetch_factor=2)
    done, it = 0, iter(dl)
    next(it)  # warm-up: workers started, first batch (not timed)
    t0 = time.perf_counter()
    while done < args.batches:
        try:
            next(it)
        except StopIteration:
            it = iter(dl)
            continue
        done += 1
    dt = time.perf_counter() - t0
    del it, dl  # joins the workers so that RUSAGE_CHILDREN covers them
    gc.collect()
    main_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"mode": "torch", "patients_per_s": round(args.batches * args.batch / dt, 1),
                      "batches": args.batches, "batch": args.batch, "workers": args.workers,
                      "seconds": round(dt, 2), "peak_rss_mib": round(main_mib),
                      "peak_rss_worker_mib": round(child_mib)}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--out", required=True)
    g.add_argument("--patients", type=int, default=128)
    g.add_argument("--px", type=int, default=1024)
    t = sub.add_parser("torch")
    t.add_argument("--manifest", required=True)
    t.add_argument("--size", type=int, default=224)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--batches", type=int, default=12)
    a = ap.parse_args()
    gen(a) if a.cmd == "gen" else bench_torch(a)


if __name__ == "__main__":
    main()
