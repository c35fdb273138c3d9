#!/usr/bin/env bash
# Model benchmark (docs/PERFORMANCE.md, "Model forward+backward"): one training step (forward + tripartite loss +
# backward) on CPU, retclip C++ vs PyTorch eager, same sizes, same threads, same run.
#   BUILD_DIR=build scripts/bench_model.sh      (needs the bench_model target built)
#   THREADS=2 BATCH=8 STEPS=3 SIZES="tiny base" scripts/bench_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
STEPS=${STEPS:-3}
SIZES=${SIZES:-"tiny base"}
BIN="$BUILD_DIR/bench/bench_model"
[ -x "$BIN" ] || { echo "build it first: cmake --build $BUILD_DIR --target bench_model" >&2; exit 2; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "threads $THREADS, batch $BATCH patients (2 images + 1 text each), $STEPS timed steps after 1 warm-up"
ratio() { python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f'ratio pytorch/retclip: {b[\"ms_per_step\"]/a[\"ms_per_step\"]:.2f}x')" "$1" "$2"; }
for size in $SIZES; do
  case $size in
    tiny) args=(vit-tiny bert-tiny 8000 "$BATCH" 64) ;;
    base) args=(ViT-B-16 RoBERTa-wwm-ext-base-chinese 21128 "$BATCH" 100) ;;
    *) echo "unknown size $size (tiny|base)" >&2; exit 2 ;;
  esac
  cpp=$(OMP_NUM_THREADS=$THREADS "$BIN" "${args[@]}" "$THREADS" "$STEPS")
  echo "$cpp"
  py=$(OMP_NUM_THREADS=$THREADS python3 bench/bench_model.py "${args[@]}" "$THREADS" "$STEPS")
  echo "$py"
  ratio "$cpp" "$py"
done
