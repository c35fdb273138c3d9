#!/usr/bin/env python3
"""Per-eye diabetic-retinopathy grade labels from a `retclip synth` manifest.

    python3 scripts/synth_dr_labels.py runs/synth-dr/train.csv runs/synth-dr/dr.csv

Reads synth's CSV (left_labels / right_labels: finding codes joined by ';') and writes a
single-label eye-level manifest for configs/finetune-synth-dr.yaml:
patient_id,left_image,right_image,left_label,right_label, where a label is the eye's DR
grade (normal, dr1, dr2, dr3, dr4; an eye whose findings hold no DR code is `normal`
for DR) and an eye without an image has no label. Image paths are rewritten relative to
the output's folder. No split column: the fine-tuning config draws val and test.
"""
import csv
import os
import re
import sys

GRADES = ["normal", "dr1", "dr2", "dr3", "dr4"]
DR_CODE = re.compile(r"^dr([1-4])$")


def dr_grade(codes: str) -> int:
    """Highest DR grade among ';'-joined finding codes (0 when none is a DR code)."""
    grades = [int(m.group(1)) for c in codes.split(";") if (m := DR_CODE.match(c.strip()))]
    return max(grades, default=0)


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: synth_dr_labels.py SYNTH_CSV OUT_CSV")
    src, out = argv[1], argv[2]
    src_dir = os.path.dirname(os.path.abspath(src))
    out_dir = os.path.dirname(os.path.abspath(out))
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"patient_id", "left_image", "right_image", "left_labels", "right_labels"}
    if not rows or not need <= set(rows[0]):
        sys.exit(f"{src}: expected the columns of `retclip synth` ({', '.join(sorted(need))}). "
                 "HINT: pass the train.csv or val.csv that retclip synth wrote")

    def image(p):
        return os.path.relpath(os.path.join(src_dir, p), out_dir) if p else ""

    os.makedirs(out_dir, exist_ok=True)
    counts = [0] * len(GRADES)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "left_image", "right_image", "left_label", "right_label"])
        for r in rows:
            labels = []
            for eye in ("left", "right"):
                if r[f"{eye}_image"]:
                    g = dr_grade(r[f"{eye}_labels"])
                    counts[g] += 1
                    labels.append(GRADES[g])
                else:
                    labels.append("")
            w.writerow([r["patient_id"], image(r["left_image"]), image(r["right_image"])] + labels)
    print(f"{out}: {len(rows)} patients, eyes per grade "
          + ", ".join(f"{g} {n}" for g, n in zip(GRADES, counts)))


if __name__ == "__main__":
    main(sys.argv)
