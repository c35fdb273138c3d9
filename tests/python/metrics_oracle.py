"""Reference values for retclip's classification metrics (tests/eval/metrics_test.cpp).

Usage: metrics_oracle.py OUT.json
Writes random single-label and multi-label cases (scores quantised so that ties occur,
some classes absent from the truth or the predictions) with the values scikit-learn
computes for them. Test oracle only; retclip never runs Python.
"""
import json
import sys
import warnings
from fractions import Fraction

import numpy as np
from sklearn.metrics import (average_precision_score, balanced_accuracy_score,
                             cohen_kappa_score, confusion_matrix, f1_score,
                             roc_auc_score)


def nan_to_none(v):
    v = float(v)
    return None if not np.isfinite(v) else v


def single_case(rng, n, c, levels, absent):
    """Scores [n,c] on `levels` distinct values; classes in `absent` never appear as truth."""
    present = [k for k in range(c) if k not in absent]
    y = rng.choice(present, size=n)
    s = rng.integers(0, levels, size=(n, c)).astype(np.float64) / levels
    # Make the scores informative so that metrics are not all near chance.
    s[np.arange(n), y] += rng.random(n) * 0.5
    s = np.round(s * levels) / levels
    pred = s.argmax(1)  # first index of the largest, as retclip
    auroc, aupr = [], []
    for k in range(c):
        pos = (y == k).astype(int)
        if pos.sum() == 0 or pos.sum() == n:
            auroc.append(None)
            aupr.append(None)
        else:
            auroc.append(float(roc_auc_score(pos, s[:, k])))
            aupr.append(float(average_precision_score(pos, s[:, k])))
    out = {
        "n": n, "c": c, "scores": s.tolist(), "labels": y.tolist(),
        "auroc": auroc, "aupr": aupr,
        "auroc_macro": float(np.mean([a for a in auroc if a is not None])),
        "aupr_macro": float(np.mean([a for a in aupr if a is not None])),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, average="macro")),
        "kappa": nan_to_none(cohen_kappa_score(y, pred, labels=list(range(c)))),
        "kappa_linear": nan_to_none(cohen_kappa_score(y, pred, labels=list(range(c)), weights="linear")),
        "kappa_quadratic": nan_to_none(
            cohen_kappa_score(y, pred, labels=list(range(c)), weights="quadratic")),
        "confusion": confusion_matrix(y, pred, labels=list(range(c))).tolist(),
    }
    cm = np.array(out["confusion"], dtype=np.float64)
    tp = np.diag(cm)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        out["sensitivity"] = [nan_to_none(v) for v in tp / (tp + fn)]
        out["specificity"] = [nan_to_none(v) for v in tn / (tn + fp)]
    if len(np.unique(y)) == c:
        # With every class present, macro one-vs-rest over probabilities is scikit-learn's
        # own multi-class call; the probabilities keep the order of the scores per column.
        p = np.exp(s * 3.0)
        p /= p.sum(1, keepdims=True)
        if c == 2:
            # scikit-learn scores a binary problem on column 1 alone; retclip's macro
            # averages both columns. On a dyadic grid 1 - p1 is exact, so both columns
            # keep the same ties and the two definitions agree exactly.
            p1 = np.round(p[:, 1] * 2.0**20) / 2.0**20
            p = np.stack([1.0 - p1, p1], axis=1)
        out["probs"] = p.tolist()
        out["auroc_ovr_probs"] = float(
            roc_auc_score(y, p[:, 1]) if c == 2 else roc_auc_score(y, p, multi_class="ovr"))
        out["auroc_probs"] = [float(roc_auc_score((y == k).astype(int), p[:, k])) for k in range(c)]
    return out


def multi_case(rng, n_val, n_test, L, levels):
    def draw(n):
        t = (rng.random((n, L)) < rng.uniform(0.15, 0.6, size=L)).astype(np.float64)
        s = np.round((rng.random((n, L)) * 0.7 + t * 0.3) * levels) / levels
        return s, t

    vs, vt = draw(n_val)
    ts, tt = draw(n_test)
    # One label never positive in the test split: its AUROC/AUPR/F1 are undefined.
    tt[:, L - 1] = 0
    # Best F1 on validation over every candidate threshold (predict score >= t).
    # The rule under test: the highest threshold whose F1 is largest (compared exactly).
    best_val_f1, thresholds, test_f1 = [], [], []
    for l in range(L):
        best, thr = Fraction(-1), None
        for t in sorted(np.unique(vs[:, l]), reverse=True):
            p = vs[:, l] >= t
            tp = int((p & (vt[:, l] > 0)).sum())
            fp = int((p & (vt[:, l] == 0)).sum())
            fn = int((~p & (vt[:, l] > 0)).sum())
            if Fraction(2 * tp, 2 * tp + fp + fn) > best:
                best, thr = Fraction(2 * tp, 2 * tp + fp + fn), float(t)
        thresholds.append(thr)
        best_val_f1.append(float(f1_score(vt[:, l], vs[:, l] >= thr)))
        test_f1.append(float(f1_score(tt[:, l], ts[:, l] >= thr)) if tt[:, l].sum() > 0 else None)
    auroc, aupr = [], []
    for l in range(L):
        pos = tt[:, l]
        if pos.sum() == 0 or pos.sum() == n_test:
            auroc.append(None)
            aupr.append(None)
        else:
            auroc.append(float(roc_auc_score(pos, ts[:, l])))
            aupr.append(float(average_precision_score(pos, ts[:, l])))
    return {"val_scores": vs.tolist(), "val_targets": vt.tolist(), "test_scores": ts.tolist(),
            "test_targets": tt.tolist(), "best_val_f1": best_val_f1,
            "thresholds": thresholds, "test_f1": test_f1,
            "auroc": auroc, "aupr": aupr}


def main():
    warnings.simplefilter("ignore")  # absent classes are intended here
    rng = np.random.default_rng(12)
    single = []
    for i in range(40):
        c = int(rng.integers(2, 7))
        n = int(rng.integers(5, 120))
        levels = int(rng.choice([3, 5, 10, 1000]))
        absent = set()
        if i % 3 == 1 and c > 2:
            absent = {int(rng.integers(0, c))}
        single.append(single_case(rng, n, c, levels, absent))
    multi = [multi_case(rng, int(rng.integers(20, 80)), int(rng.integers(20, 80)),
                        int(rng.integers(2, 6)), int(rng.choice([4, 10, 1000]))) for _ in range(15)]
    with open(sys.argv[1], "w") as f:
        json.dump({"single": single, "multi": multi}, f)


if __name__ == "__main__":
    main()
