#!/usr/bin/env bash
# Fine-tuning step throughput (images/s): `retclip finetune` on synthetic images (its
# "in the step" rate: forward + backward + update, data loading excluded) and the PyTorch
# eager step of bench/bench_finetune.py with the same model (vit-tiny sizes by default),
# batch, precision and threads, one after the other in the same run; prints both and the
# ratio.   STEPS=20 WARMUP=3 BATCH=32 THREADS=2 scripts/bench_finetune.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD_DIR:-build}/src/cli/retclip
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
BATCH=${BATCH:-32}
THREADS=${THREADS:-$(getconf _NPROCESSORS_ONLN)}
OUT=${OUT:-$(mktemp -d)}
export OMP_NUM_THREADS=$THREADS
echo "machine: $(getconf _NPROCESSORS_ONLN) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %H:%M UTC')"
total=$((STEPS + WARMUP))
patients=$(( (total * BATCH) / 2 + 64 ))
$BIN synth --out "$OUT/data" --patients "$patients" --val 0 --seed 5 --size 64 >/dev/null
# Per-eye findings, eye level; one epoch holds all the steps (the in-step rate of the
# last log line covers the timed steps only: the window restarts at step WARMUP).
$BIN finetune --set model.vision.preset=vit-tiny --set model.text.preset=bert-micro \
  --set data.image_size=64 --set finetune.data="$OUT/data/train.csv" --set finetune.level=eye \
  --set finetune.steps="$total" --set finetune.epochs=1 --set finetune.batch_size="$BATCH" \
  --set finetune.val_fraction=0.05 --set finetune.drop_path=0 --set train.device=cpu \
  --set train.threads="$THREADS" --set log.interval="$WARMUP" --set log.tensorboard=false \
  --set checkpoint.every_steps=100000 --set log.dir="$OUT/run" > "$OUT/retclip.txt" 2>&1
ours=$(grep "step $total/$total" "$OUT/retclip.txt" | sed -E 's/.*\(([0-9.]+) images\/s in the step\).*/\1/')
ref=$(python3 bench/bench_finetune.py --image-size 64 --patch 8 --width 128 --layers 4 --heads 2 \
  --embed 128 --classes "$(python3 -c "import json;print(len(json.load(open('$OUT/run/results.json'))['classes']))")" \
  --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --threads "$THREADS")
echo "retclip finetune: $ours images/s in the step (batch $BATCH, fp32, $THREADS threads)"
echo "pytorch eager:    $ref"
python3 -c "import json,sys; r=json.loads(sys.argv[2]); print(f'ratio retclip / pytorch: {float(sys.argv[1]) / r[\"images_per_s\"]:.2f}')" "$ours" "$ref"
