#!/usr/bin/env python3
"""scripts/synth_dr_labels.py: synth's per-eye finding codes to one DR grade per eye.
`drusen` starts with "dr" but is no DR grade (the inline version in
scripts/finetune_synth.sh crashed on it); a missing eye gets no label; image paths are
rewritten relative to the output's folder."""
import csv
import os
import subprocess
import sys
import tempfile

script = sys.argv[1]
with tempfile.TemporaryDirectory() as d:
    os.makedirs(os.path.join(d, "synth"))
    src = os.path.join(d, "synth", "train.csv")
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "left_image", "right_image", "report", "left_report",
                    "right_report", "split", "left_labels", "right_labels", "patient_labels"])
        w.writerow(["P0", "images/P0_L.png", "images/P0_R.png", "r", "", "", "train",
                    "drusen", "dr2;drusen;hypertensive", "dr2;drusen;hypertensive"])
        w.writerow(["P1", "images/P1_L.png", "", "r", "", "", "train", "dr4;dr3", "", "dr4"])
        w.writerow(["P2", "", "images/P2_R.png", "r", "", "", "train", "", "normal", "normal"])
    out = os.path.join(d, "out", "dr.csv")
    p = subprocess.run([sys.executable, script, src, out], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = list(csv.DictReader(open(out)))
    got = [(r["patient_id"], r["left_label"], r["right_label"]) for r in rows]
    want = [("P0", "normal", "dr2"), ("P1", "dr4", ""), ("P2", "", "normal")]
    assert got == want, f"grades {got}, expected {want}"
    assert rows[0]["left_image"] == os.path.join("..", "synth", "images", "P0_L.png"), rows[0]
    assert rows[1]["right_image"] == "", rows[1]
    assert "dr2 1" in p.stdout and "normal 2" in p.stdout, p.stdout
    # A CSV that is not synth's is refused with the columns it needs.
    bad = os.path.join(d, "bad.csv")
    open(bad, "w").write("patient_id,label\nP0,dr1\n")
    p = subprocess.run([sys.executable, script, bad, out], capture_output=True, text=True)
    assert p.returncode != 0 and "left_labels" in p.stderr, p.stderr
print("synth_dr_labels: ok")
