#!/usr/bin/env bash
# Data-parallel scaling on this machine's CPU: the tiny preset at one global batch,
# 1 rank x THREADS threads vs NPROC ranks x (THREADS / NPROC) threads (Gloo over
# loopback), same data, same steps. Prints patients/s and the share of step time the
# ranks spent blocked in collectives (comm), from the runs' metrics.jsonl.
# Knobs: BUILD_DIR, STEPS (default 60), BATCH (global, default 32), NPROC (2), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${BUILD_DIR:-build}/src/cli/retclip
STEPS=${STEPS:-60}
BATCH=${BATCH:-32}
NPROC=${NPROC:-2}
THREADS=${THREADS:-2}
W=$(mktemp -d /tmp/retclip-bench-dist.XXXXXX)
trap 'rm -rf "$W"' EXIT
echo "bench_dist: synthetic data in $W"
$R synth --out "$W/data" --patients 1200 --val 0 --seed 5 --size 80 >"$W/prep.log" 2>&1
$R tokenizer train --manifest "$W/data/train.csv" --vocab-size 400 --out "$W/tok.model" >>"$W/prep.log" 2>&1
$R pack --manifest "$W/data/train.csv" --out "$W/shards" --size 64 --tokenizer "$W/tok.model" \
  --tokenizer-type sentencepiece --context 64 >>"$W/prep.log" 2>&1
args=(train --config configs/tiny-cpu.yaml --set data.train="$W/shards" --set data.val=
  --set data.tokenizer.path="$W/tok.model" --set train.steps="$STEPS" --set log.interval=$((STEPS / 3))
  --set train.val_every=0 --set checkpoint.every_steps=100000 --set log.tensorboard=false
  --set data.workers=1)
report() {  # last progress window of a run: patients/s and comm share
  ${PYTHON:-python3} - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[2] + "/metrics.jsonl") if "train/patients_per_s" in l]
last = rows[-1]
print(f"{sys.argv[1]:<28} {last['train/patients_per_s']:8.1f} patients/s   "
      f"comm {100 * last.get('train/comm_share', 0):4.1f}% of step time   loss {last['train/loss']:.4f}")
PY
}
echo "bench_dist: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), global batch $BATCH, $STEPS steps"
$R "${args[@]}" --set train.batch_size="$BATCH" --set train.threads="$THREADS" \
  --set log.dir="$W/one" >/dev/null 2>&1
report "1 rank x $THREADS threads" "$W/one"
$R launch --nproc "$NPROC" --master-port "${PORT:-29571}" -- "${args[@]}" \
  --set train.batch_size=$((BATCH / NPROC)) --set train.threads=$((THREADS / NPROC > 0 ? THREADS / NPROC : 1)) \
  --set log.dir="$W/many" >/dev/null 2>&1
report "$NPROC ranks x $((THREADS / NPROC > 0 ? THREADS / NPROC : 1)) thread(s)" "$W/many"
