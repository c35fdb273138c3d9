#!/usr/bin/env python3
"""Two small labelled sets from a `retclip synth` manifest, for `retclip benchmark`
(configs/bench-smoke.yaml) in the two layouts a benchmark reads.

    python3 scripts/bench_sets.py runs/demo/data/val.csv runs/bench-smoke/sets

Writes, under the output folder:
  folder/{train,val,test}/{abnormal,normal}/<patient>_<L|R>.png  RETFound's layout: eye
      level, single-label (`normal` when the eye's findings are only `normal`, else
      `abnormal`); the images are copied.
  patients.csv  the manifest's rows with a split column (patient level, multi-label
      `patient_labels`), image paths relative to the output folder.
Splits are by patient, the same in both: every 5th patient (in manifest order) is test,
the next one val, the rest train.
"""
import csv
import os
import shutil
import sys


def split_of(i: int) -> str:
    return "test" if i % 5 == 0 else "val" if i % 5 == 1 else "train"


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: bench_sets.py SYNTH_CSV OUT_DIR")
    src, out = argv[1], argv[2]
    base = os.path.dirname(os.path.abspath(src))
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "patient_labels" not in rows[0]:
        sys.exit(f"{src}: expected a retclip synth manifest (patient_labels, left_labels, "
                 "right_labels columns)")
    folder = os.path.join(out, "folder")
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(out, exist_ok=True)
    fields = list(rows[0].keys())
    if "split" not in fields:
        fields.append("split")
    with open(os.path.join(out, "patients.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for i, r in enumerate(rows):
            split = split_of(i)
            row = dict(r, split=split)
            for eye, col, lab in (("L", "left_image", "left_labels"),
                                  ("R", "right_image", "right_labels")):
                if not r[col]:
                    continue
                image = os.path.join(base, r[col])
                row[col] = os.path.relpath(image, os.path.abspath(out))
                cls = "normal" if r[lab].strip() in ("", "normal") else "abnormal"
                dest = os.path.join(folder, split, cls)
                os.makedirs(dest, exist_ok=True)
                shutil.copyfile(image, os.path.join(dest, f"{r['patient_id']}_{eye}.png"))
            w.writerow(row)
    print(f"bench_sets: {len(rows)} patients -> {out}/patients.csv and {folder}/")


if __name__ == "__main__":
    main(sys.argv)
