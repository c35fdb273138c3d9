#!/usr/bin/env bash
# Training-step benchmark (docs/PERFORMANCE.md, "retclip bench"): `retclip bench --data
# synthetic` and the PyTorch eager step of bench/bench_train.py with the same model,
# batch, precision, device and threads, one after the other in the same run; prints
# both JSON lines and the patients/s ratio.
#   BUILD_DIR=build scripts/bench_train.sh                     (tiny CPU preset)
#   scripts/bench_train.sh configs/bench-vitb16-bertbase.yaml --set train.batch_size=128
#   STEPS=20 WARMUP=3 THREADS=2 IMPL=plain OUT=/tmp/b scripts/bench_train.sh CONFIG [--set k=v ...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
IMPL=${IMPL:-auto}
PY=${PYTHON:-python3}
CONFIG=${1:-configs/tiny-cpu.yaml}
shift || true
BIN="$BUILD_DIR/src/cli/retclip"
[ -x "$BIN" ] || { echo "build it first: BUILD_DIR=$BUILD_DIR scripts/build.sh" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
extra=()
if [ -n "${THREADS:-}" ]; then
  extra+=(--set "train.threads=$THREADS")
  export OMP_NUM_THREADS=$THREADS
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %H:%M UTC')"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
echo "config $CONFIG $* ${extra[*]}, $STEPS timed steps after $WARMUP warm-up"
"$BIN" bench --config "$CONFIG" "$@" "${extra[@]}" --data synthetic --steps "$STEPS" \
  --warmup "$WARMUP" --json "$OUT/retclip.json" | tee "$OUT/retclip.txt"
"$PY" bench/bench_train.py --like "$OUT/retclip.json" --impl "$IMPL" ${PY_ARGS:-} \
  | tee "$OUT/pytorch.json"
"$PY" - "$OUT/retclip.json" "$OUT/pytorch.json" <<'PYEOF'
import json, sys
a, b = (json.loads(open(p).readline()) for p in sys.argv[1:3])
print(f"retclip {a['patients_per_s']:.2f} patients/s ({a['step_ms']:.1f} ms/step, {a['params']} params), "
      f"{b['impl']} {b['patients_per_s']:.2f} patients/s ({b['step_ms']:.1f} ms/step, {b['params']} params)")
print(f"ratio retclip/pytorch: {a['patients_per_s'] / b['patients_per_s']:.2f}x "
      f"(peak memory {a['peak_memory_gib']:.2f} / {b['peak_memory_gib']:.2f} GiB {a['memory_kind']})")
PYEOF
