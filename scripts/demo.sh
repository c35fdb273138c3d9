#!/usr/bin/env bash
# The embedded default, end to end on a fresh machine: set-up, build, synthetic
# fundus data, tokenizer, shards, pretraining of the tiny preset on CPU, held-out
# evaluation, checkpoint and export. Everything lands in ${DEMO_DIR:-runs/demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-runs/demo}
PATIENTS=${PATIENTS:-2200}
VAL=${VAL:-200}
MINUTES=${MINUTES:-9}
t0=$(date +%s)

bash scripts/setup.sh
bash scripts/build.sh
R=${BUILD_DIR:-build}/src/cli/retclip
$R info

echo "== 1/6 synthetic fundus pairs: $PATIENTS patients ($VAL held out)"
$R synth --out "$DEMO_DIR/data" --patients "$PATIENTS" --val "$VAL" --seed 7 --size 96 --preview

echo "== 2/6 tokenizer trained on the training reports"
$R tokenizer train --manifest "$DEMO_DIR/data/train.csv" --vocab-size 600 \
  --out "$DEMO_DIR/tokenizer.model"

echo "== 3/6 packed shards (decoded, fundus-cropped, tokenized once)"
for split in train val; do
  $R pack --manifest "$DEMO_DIR/data/$split.csv" --out "$DEMO_DIR/shards/$split" --size 64 \
    --tokenizer "$DEMO_DIR/tokenizer.model" --tokenizer-type sentencepiece --context 64
done

echo "== 4/6 pretraining (tiny preset, CPU, at most $MINUTES minutes)"
$R train --config configs/tiny-cpu.yaml \
  --set log.dir="$DEMO_DIR/run" \
  --set data.train="$DEMO_DIR/shards/train" --set data.val="$DEMO_DIR/shards/val" \
  --set data.format=auto --set data.tokenizer.path="$DEMO_DIR/tokenizer.model" \
  --max-minutes "$MINUTES"

echo "== 5/6 held-out evaluation"
$R eval --checkpoint "$DEMO_DIR/run/checkpoints" --data "$DEMO_DIR/shards/val" \
  --out "$DEMO_DIR/eval.json"

echo "== 6/6 export"
$R export --checkpoint "$DEMO_DIR/run/checkpoints" --out "$DEMO_DIR/export" \
  --parts vision,text,full
ls -l "$DEMO_DIR/export"
echo "demo: done in $(( $(date +%s) - t0 ))s; outputs under $DEMO_DIR"
