#!/usr/bin/env bash
# loss.duplicates negative vs positive on the demo's synthetic data: the same data, seed and
# steps for both; then the held-out tie-aware recall (`retclip eval`) and the demo's linear
# probe of the per-eye findings for each run. Results: $DIR/eval_<mode>.log, probe_<mode>.log.
# Figures and the machine: docs/EVALUATION.md, "Duplicate reports as negatives or positives".
set -euo pipefail
cd "$(dirname "$0")/.."
R=${R:-${BUILD_DIR:-build}/src/cli/retclip}
DIR=${DIR:-runs/duplicates}
STEPS=${STEPS:-1000}
mkdir -p "$DIR"
if [ ! -f "$DIR/data/val.csv" ]; then
  $R synth --out "$DIR/data" --patients 2200 --val 200 --seed 7 --size 96
  $R tokenizer train --manifest "$DIR/data/train.csv" --vocab-size 600 --out "$DIR/tokenizer.model"
fi
for split in train val; do
  [ -f "$DIR/shards/$split/index.json" ] ||
    $R pack --manifest "$DIR/data/$split.csv" --out "$DIR/shards/$split" --size 64 \
      --tokenizer "$DIR/tokenizer.model" --tokenizer-type sentencepiece --context 64
done
run() {
  local mode=$1 d="$DIR/$1"
  rm -rf "$d"
  $R train --config configs/tiny-cpu.yaml --set data.train="$DIR/shards/train" \
    --set data.val="$DIR/shards/val" --set data.tokenizer.path="$DIR/tokenizer.model" \
    --set log.dir="$d/run" --set train.steps="$STEPS" --set train.threads=1 --set data.workers=1 \
    --set loss.duplicates="$mode" --set train.val_every="$STEPS" > "$DIR/train_$mode.log" 2>&1
  $R eval --checkpoint "$d/run/checkpoints" --data "$DIR/shards/val" --out "$d/eval.json" \
    > "$DIR/eval_$mode.log" 2>&1
  $R export --checkpoint "$d/run/checkpoints" --out "$d/export" --parts vision,text,full \
    > /dev/null 2>&1
  $R probe --weights "$d/export" --data "$DIR/data/val.csv" --level eye --ignore-split \
    --test-fraction 0.5 --split-seed 1 --bootstrap 200 --out "$d/probe" > "$DIR/probe_$mode.log" 2>&1
}
# The two runs side by side, one thread each.
run negative & a=$!
run positive & b=$!
wait $a
wait $b
for mode in negative positive; do
  echo "== loss.duplicates: $mode"
  grep -E '^\s+(patient|left|right)\s+[0-9]' "$DIR/eval_$mode.log" || true
  grep -E 'test (auroc|aupr|f1)_macro' "$DIR/probe_$mode.log" || true
done
