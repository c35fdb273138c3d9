#!/usr/bin/env bash
# Training-step benchmark (docs/PERFORMANCE.md, "retclip bench"): `retclip bench --data
# synthetic` and the PyTorch eager step of bench/bench_train.py with the same model,
# batch, precision, device and threads, one after the other in the same run; prints
# both JSON lines and the patients/s ratio.
#   BUILD_DIR=build scripts/bench_train.sh                     (tiny CPU preset)
#   scripts/bench_train.sh configs/bench-vitb16-bertbase.yaml --set train.batch_size=128
#   STEPS=20 WARMUP=3 THREADS=2 IMPL=plain OUT=/tmp/b scripts/bench_train.sh CONFIG [--set k=v ...]
# ROUNDS=3 alternates the two sides three times and keeps each side's best round (on a
# shared machine the best round is the least disturbed one); every round is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
IMPL=${IMPL:-auto}
ROUNDS=${ROUNDS:-1}
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
echo "machine: $(getconf _NPROCESSORS_ONLN) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %H:%M UTC')"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
echo "config $CONFIG $* ${extra[*]}, $STEPS timed steps after $WARMUP warm-up"
for r in $(seq 1 "$ROUNDS"); do
  "$BIN" bench --config "$CONFIG" "$@" "${extra[@]}" --data synthetic --steps "$STEPS" \
    --warmup "$WARMUP" --json "$OUT/retclip-$r.json" | tee "$OUT/retclip-$r.txt"
  "$PY" bench/bench_train.py --like "$OUT/retclip-$r.json" --impl "$IMPL" ${PY_ARGS:-} \
    | tee "$OUT/pytorch-$r.json"
done
"$PY" - "$OUT" "$ROUNDS" <<'PYEOF'
import json, shutil, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def best(side):
    runs = [(json.loads(open(f"{out}/{side}-{r}.json").readline()), r) for r in range(1, rounds + 1)]
    j, r = max(runs, key=lambda x: x[0]["patients_per_s"])
    shutil.copy(f"{out}/{side}-{r}.json", f"{out}/{side}.json")
    if rounds > 1:
        print(f"{side}: rounds " + ", ".join(f"{x['patients_per_s']:.2f}" for x, _ in runs) + f" patients/s; best {r}")
    return j
a, b = best("retclip"), best("pytorch")
print(f"retclip {a['patients_per_s']:.2f} patients/s ({a['step_ms']:.1f} ms/step, {a['params']} params), "
      f"{b['impl']} {b['patients_per_s']:.2f} patients/s ({b['step_ms']:.1f} ms/step, {b['params']} params)")
print(f"ratio retclip/pytorch: {a['patients_per_s'] / b['patients_per_s']:.2f}x "
      f"(peak memory {a['peak_memory_gib']:.2f} / {b['peak_memory_gib']:.2f} GiB {a['memory_kind']})")
PYEOF
