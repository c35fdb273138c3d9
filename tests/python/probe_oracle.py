"""Reference linear probes for tests/eval/probe_oracle_test.cpp.

Usage: probe_oracle.py OUT.json
Writes synthetic features with train/val/test splits (binary, 4-class, multi-label) and
what scikit-learn's LogisticRegression does on them: the C chosen on validation macro
AUROC from the grid, the held-out macro AUROC with it, and the test probabilities at
C = 1. Test oracle only; retclip never runs Python.
"""
import json
import sys
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.multiclass import OneVsRestClassifier

GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0, 10000.0]


def macro_auroc(y, p, multi_label):
    vals = []
    for k in range(p.shape[1]):
        pos = y[:, k] if multi_label else (y == k).astype(int)
        if 0 < pos.sum() < len(pos):
            vals.append(roc_auc_score(pos, p[:, k]))
    return float(np.mean(vals))


def model(c, multi_label, balanced):
    lr = LogisticRegression(C=c, max_iter=5000, tol=1e-7,
                            class_weight="balanced" if balanced else None)
    return OneVsRestClassifier(lr) if multi_label else lr


def case(rng, classes, multi_label, balanced, d=16, n=(240, 120, 200)):
    centres = rng.normal(size=(classes, d)) * 0.6
    def draw(m):
        if multi_label:
            y = (rng.random((m, classes)) < 0.35).astype(int)
            x = rng.normal(size=(m, d)) + y @ centres
        else:
            # Unequal class sizes so that balanced weights matter.
            prior = np.arange(1, classes + 1, dtype=float)
            y = rng.choice(classes, size=m, p=prior / prior.sum())
            x = rng.normal(size=(m, d)) + centres[y]
        return x, y
    (xt, yt), (xv, yv), (xs, ys) = draw(n[0]), draw(n[1]), draw(n[2])
    best, best_c = -1.0, None
    for c in GRID:
        v = macro_auroc(yv, model(c, multi_label, balanced).fit(xt, yt).predict_proba(xv), multi_label)
        if v > best:
            best, best_c = v, c
    chosen = model(best_c, multi_label, balanced).fit(xt, yt)
    p1 = model(1.0, multi_label, balanced).fit(xt, yt).predict_proba(xs)
    return {"classes": classes, "multi_label": multi_label, "balanced": balanced,
            "train_x": xt.tolist(), "train_y": yt.tolist(), "val_x": xv.tolist(),
            "val_y": yv.tolist(), "test_x": xs.tolist(), "test_y": ys.tolist(),
            "chosen_c": best_c, "val_auroc": best,
            "test_auroc": macro_auroc(ys, chosen.predict_proba(xs), multi_label),
            "test_probs_c1": p1.tolist()}


def main():
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(5)
    cases = [case(rng, 2, False, False), case(rng, 4, False, False), case(rng, 4, False, True),
             case(rng, 3, True, False)]
    with open(sys.argv[1], "w") as f:
        json.dump(cases, f)


if __name__ == "__main__":
    main()
