#!/usr/bin/env bash
# Fine-tuning from a pretrained encoder against random initialisation, on the synthetic
# fundus set: synth -> tokenizer -> shards -> short tiny pretraining (PRETRAIN_STEPS) ->
# export -> `retclip finetune` twice with the same steps, data, seed and recipe (only
# finetune.init differs) on held-out patients' per-eye findings (multi-label, eye level)
# -> both validation macro AUROCs per epoch and the chosen epoch's test scores.
# Also writes a single-label DR-grade manifest of the held-out patients (left_label /
# right_label from the findings, scripts/synth_dr_labels.py) as $OUT/dr.csv. Outputs
# under ${OUT:-runs/finetune-synth}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/finetune-synth}
R=${BUILD_DIR:-build}/src/cli/retclip
PATIENTS=${PATIENTS:-1200}
HELD_OUT=${HELD_OUT:-400}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-400}
EPOCHS=${EPOCHS:-6}
THREADS=${THREADS:-0}
mkdir -p "$OUT"

echo "== synthetic pairs: $PATIENTS patients, the last $HELD_OUT held out of pretraining"
$R synth --out "$OUT/data" --patients "$PATIENTS" --val "$HELD_OUT" --seed 7 --size 64
$R tokenizer train --manifest "$OUT/data/train.csv" --vocab-size 400 --out "$OUT/tok.model"
for split in train val; do
  $R pack --manifest "$OUT/data/$split.csv" --out "$OUT/shards-$split" --size 64 \
    --tokenizer "$OUT/tok.model" --tokenizer-type sentencepiece --context 64
done

echo "== pretraining: $PRETRAIN_STEPS steps (configs/tiny-cpu.yaml)"
$R train --config configs/tiny-cpu.yaml --set data.train="$OUT/shards-train" --set data.val="$OUT/shards-val" \
  --set log.dir="$OUT/pretrain" --set train.steps="$PRETRAIN_STEPS" --set train.val_every=0 \
  --set train.threads="$THREADS" --set checkpoint.every_steps=100000 --set log.tensorboard=false \
  --overwrite
$R export --checkpoint "$OUT/pretrain/checkpoints" --out "$OUT/export" --parts vision

# The held-out patients (val.csv of synth), re-split by patient for fine-tuning: the
# reader draws val and test (stratified, by patient) from them.
python3 - "$OUT" <<'PY'
import csv, sys, os
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "data", "val.csv"))))
with open(os.path.join(out, "held_out.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["patient_id", "left_image", "right_image", "left_labels", "right_labels"])
    for r in rows:
        w.writerow([r["patient_id"], os.path.join("data", r["left_image"]) if r["left_image"] else "",
                    os.path.join("data", r["right_image"]) if r["right_image"] else "",
                    r["left_labels"], r["right_labels"]])
PY
# The same held-out patients as DR grades per eye (configs/finetune-synth-dr.yaml's input).
python3 scripts/synth_dr_labels.py "$OUT/data/val.csv" "$OUT/dr.csv"

common=(--set model.vision.preset=vit-tiny --set model.text.preset=bert-micro
  --set data.image_size=64 --set finetune.data="$OUT/held_out.csv" --set finetune.level=eye
  --set finetune.epochs="$EPOCHS" --set finetune.batch_size=32 --set finetune.warmup_epochs=1
  --set finetune.test_fraction=0.3 --set finetune.val_fraction=0.3 --set finetune.split_seed=1
  --set finetune.select=auroc_macro --set train.device=cpu --set train.threads="$THREADS"
  --set log.tensorboard=false --set checkpoint.every_steps=100000)
echo "== fine-tuning from the pretrained encoder"
$R finetune "${common[@]}" --set finetune.init="$OUT/export" --set log.dir="$OUT/ft-pretrained" --overwrite
echo "== fine-tuning from random initialisation (same steps)"
$R finetune "${common[@]}" --set finetune.init= --set log.dir="$OUT/ft-random" --overwrite

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
for name in ["ft-pretrained", "ft-random"]:
    r = json.load(open(os.path.join(out, name, "results.json")))
    hist = [h["val"]["auroc_macro"] for h in r["selection"]["history"]]
    print(f"{name:14s} init {r['init']['kind']:15s} steps {r['steps']:4d} | val macro AUROC by epoch "
          + " ".join(f"{a:.3f}" for a in hist)
          + f" | chosen epoch {r['selection']['chosen_epoch']} | test macro AUROC "
          + f"{r['test']['auroc_macro']:.3f}")
PY
