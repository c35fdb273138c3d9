#!/usr/bin/env bash
# The embedded default, end to end on a fresh machine: set-up, build, synthetic
# fundus data, tokenizer, shards, pretraining of the tiny preset on CPU, held-out
# evaluation, checkpoint, export, and a linear probe of the per-eye findings with the
# pretrained encoder against a random-initialised one. Everything lands in
# ${DEMO_DIR:-runs/demo}. The whole schedule always runs (STEPS, default the config's
# 2000): its duration is estimated from a short timed run first and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-runs/demo}
PATIENTS=${PATIENTS:-2200}
VAL=${VAL:-200}
STEPS=${STEPS:-2000}
t0=$(date +%s)

bash scripts/setup.sh
bash scripts/build.sh
R=${BUILD_DIR:-build}/src/cli/retclip
$R info

echo "== 1/7 synthetic fundus pairs: $PATIENTS patients ($VAL held out)"
$R synth --out "$DEMO_DIR/data" --patients "$PATIENTS" --val "$VAL" --seed 7 --size 96 --preview

echo "== 2/7 tokenizer trained on the training reports"
$R tokenizer train --manifest "$DEMO_DIR/data/train.csv" --vocab-size 600 \
  --out "$DEMO_DIR/tokenizer.model"

echo "== 3/7 packed shards (decoded, fundus-cropped, tokenized once)"
for split in train val; do
  $R pack --manifest "$DEMO_DIR/data/$split.csv" --out "$DEMO_DIR/shards/$split" --size 64 \
    --tokenizer "$DEMO_DIR/tokenizer.model" --tokenizer-type sentencepiece --context 64
done

echo "== 4/7 pretraining (tiny preset, CPU, all $STEPS steps)"
train_args=(--config configs/tiny-cpu.yaml
  --set data.train="$DEMO_DIR/shards/train" --set data.val="$DEMO_DIR/shards/val"
  --set data.format=auto --set data.tokenizer.path="$DEMO_DIR/tokenizer.model")
# A timed run of 20 steps says how long the whole schedule takes on this machine.
rm -rf "$DEMO_DIR/timing"
tt0=$(date +%s%N)
$R train "${train_args[@]}" --set log.dir="$DEMO_DIR/timing" --set train.steps=20 \
  --set train.val_every=0 --set checkpoint.every_steps=1000 >/dev/null
awk -v ns="$(( $(date +%s%N) - tt0 ))" -v steps="$STEPS" 'BEGIN {
  s = ns / 1e9 / 20
  printf "demo: %.2f s/step measured over 20 steps (incl. start-up): %d steps take about %.0f minutes here\n", s, steps, s * steps / 60 }'
rm -rf "$DEMO_DIR/timing"
ts0=$(date +%s)
# --overwrite: a demo run left by an earlier demo is started over, not mixed with this one.
$R train "${train_args[@]}" --set log.dir="$DEMO_DIR/run" --set train.steps="$STEPS" --overwrite |
  tee "$DEMO_DIR/train.log"
done_step=$(grep -o 'trained to step [0-9]*' "$DEMO_DIR/train.log" | grep -o '[0-9]*$' || echo 0)
echo "demo: pretraining ran $done_step of $STEPS steps in $(( ($(date +%s) - ts0) / 60 )) min"

echo "== 5/7 held-out evaluation (tie-aware recall)"
$R eval --checkpoint "$DEMO_DIR/run/checkpoints" --data "$DEMO_DIR/shards/val" \
  --out "$DEMO_DIR/eval.json"

echo "== 6/7 export"
$R export --checkpoint "$DEMO_DIR/run/checkpoints" --out "$DEMO_DIR/export" \
  --parts vision,text,full
ls -l "$DEMO_DIR/export"

echo "== 7/7 linear probe of the per-eye findings on the held-out patients"
# Held-out patients re-split by patient (half test); the same probe on a random-initialised
# encoder of the same shape is the baseline that pretraining must beat.
$R probe --weights "$DEMO_DIR/export" --data "$DEMO_DIR/data/val.csv" --level eye \
  --ignore-split --test-fraction 0.5 --split-seed 1 --bootstrap 200 \
  --out "$DEMO_DIR/probe" --random-baseline
echo "demo: done in $(( $(date +%s) - t0 ))s; outputs under $DEMO_DIR"
