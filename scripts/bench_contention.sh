#!/usr/bin/env bash
# Training throughput with and without a competing busy process (docs/PERFORMANCE.md,
# "Throughput under CPU contention"): `retclip bench --data synthetic` on the tiny CPU
# preset under each OpenMP wait setting, once on its own and once beside a shell busy
# loop, in the same run. Prints one line per case with patients/s and CPU seconds.
#   BUILD_DIR=build scripts/bench_contention.sh
#   STEPS=30 WARMUP=3 ROUNDS=2 scripts/bench_contention.sh configs/tiny-cpu.yaml --set k=v
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-1}
CONFIG=${1:-configs/tiny-cpu.yaml}
shift || true
# SIDE=pytorch times the PyTorch half of scripts/bench_train.sh (bench/bench_train.py,
# same LibTorch and libgomp) on the tiny CPU preset's setup instead of the retclip binary.
SIDE=${SIDE:-retclip}
BIN="$BUILD_DIR/src/cli/retclip"
if [ "$SIDE" = retclip ]; then
  [ -x "$BIN" ] || { echo "build it first: BUILD_DIR=$BUILD_DIR scripts/build.sh" >&2; exit 2; }
fi
OUT=$(mktemp -d)
# The setup `retclip bench --config configs/tiny-cpu.yaml --data synthetic` reports.
cat > "$OUT/like.json" <<JSON
{"device": "cpu", "precision": "fp32", "batch": 32, "image_size": 64, "tokens": 64, "threads": ${THREADS:-2}, "steps": $STEPS, "warmup": $WARMUP, "setup": {"vision": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "heads": 2, "mlp_ratio": 4.0}, "text": {"vocab_size": 8000, "hidden": 128, "layers": 2, "heads": 2, "intermediate": 512, "max_position": 128, "dropout": 0.0}, "embed_dim": 128, "logit_scale_init": 2.65926, "logit_scale_max": 4.605170185988091, "optim": {"lr": 0.0005, "weight_decay": 0.1, "betas": [0.9, 0.98], "eps": 1e-06, "clip_norm": 0.0, "no_decay": ["bias", "LayerNorm", "ln_", "logit_scale", "class_embedding", "positional_embedding", "position_embeddings"]}, "seed": 123}}
JSON
echo "machine: $(getconf _NPROCESSORS_ONLN) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC')"
echo "side $SIDE, config $CONFIG $*, $STEPS timed steps after $WARMUP warm-up, ${THREADS:-2} intra-op threads (retclip: train.threads)"
if [ -n "${THREADS:-}" ]; then set -- "$@" --set "train.threads=$THREADS"; fi
# name|env(1) words: libgomp's defaults (RETCLIP_OPENMP_DEFAULTS=1 skips retclip's), then
# retclip's default, a shorter spin, and one intra-op thread.
cases=("libgomp default (spin 300000)|-u GOMP_SPINCOUNT -u OMP_WAIT_POLICY RETCLIP_OPENMP_DEFAULTS=1"
       "retclip default (OMP_WAIT_POLICY=PASSIVE)|-u RETCLIP_OPENMP_DEFAULTS -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY"
       "GOMP_SPINCOUNT=10000|-u OMP_WAIT_POLICY RETCLIP_OPENMP_DEFAULTS=1 GOMP_SPINCOUNT=10000"
       "train.threads=1|-u GOMP_SPINCOUNT -u OMP_WAIT_POLICY RETCLIP_OPENMP_DEFAULTS=1 OMP_NUM_THREADS=1")
# The PyTorch side has no re-exec of its own: give it the value retclip sets.
[ "$SIDE" = retclip ] || cases[1]="retclip default (OMP_WAIT_POLICY=PASSIVE)|-u GOMP_SPINCOUNT OMP_WAIT_POLICY=PASSIVE"
busy_pid=""
stop_busy() { if [ -n "$busy_pid" ]; then kill "$busy_pid" 2>/dev/null || true; wait "$busy_pid" 2>/dev/null || true; busy_pid=""; fi; }
trap stop_busy EXIT
for r in $(seq 1 "$ROUNDS"); do
  for load in idle busy; do
    if [ "$load" = busy ]; then sh -c 'while :; do :; done' & busy_pid=$!; fi
    for c in "${cases[@]}"; do
      name=${c%%|*}; words=${c#*|}
      t0=$(date +%s.%N)
      # shellcheck disable=SC2086
      if [ "$SIDE" = retclip ]; then
        /usr/bin/time -f '%U %S' -o "$OUT/time" env $words "$BIN" bench --config "$CONFIG" "$@" \
          --data synthetic --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/b.json" >/dev/null 2>&1
      else
        /usr/bin/time -f '%U %S' -o "$OUT/time" env $words python3 bench/bench_train.py \
          --like "$OUT/like.json" --impl plain > "$OUT/b.json" 2>/dev/null
      fi
      wall=$(echo "$(date +%s.%N) - $t0" | bc)
      pps=$(python3 -c "import json; print(json.load(open('$OUT/b.json'))['patients_per_s'])")
      cpu=$(awk '{print $1 + $2}' "$OUT/time")
      printf 'round %d  %-5s  %-40s %8.1f patients/s   process %5.1f s wall, %5.1f s CPU   load %s\n' \
        "$r" "$load" "$name" "$pps" "$wall" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)"
    done
    stop_busy
  done
done
