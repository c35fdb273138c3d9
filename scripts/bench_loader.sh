#!/usr/bin/env bash
# Loader benchmark (docs/PERFORMANCE.md, "Loader"): patients/s at 224 px from (a) JPEG files through
# data::Loader, (b) packed shards through data::Loader, (c) a PyTorch DataLoader with
# 2 workers on the same files; all in one run on the same machine.
#   BUILD_DIR=build scripts/bench_loader.sh        (needs the bench_loader target built)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
WORK=${WORK:-/tmp/retclip-bench-loader}
PATIENTS=${PATIENTS:-128}
PX=${PX:-1024}
BATCH=${BATCH:-16}
WORKERS=${WORKERS:-2}
BIN="$BUILD_DIR/bench/bench_loader"
[ -x "$BIN" ] || { echo "build it first: cmake --build $BUILD_DIR --target bench_loader" >&2; exit 2; }
if [ ! -f "$WORK/data/manifest.csv" ]; then
  python3 bench/bench_loader.py gen --out "$WORK/data" --patients "$PATIENTS" --px "$PX"
fi
rm -rf "$WORK/shards"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "input: $PATIENTS patients x 2 JPEG ${PX}x${PX}, output 224 px, batch $BATCH, $WORKERS workers"
"$BIN" pack "$WORK/data/manifest.csv" "$WORK/shards" 224 "$WORKERS"
"$BIN" jpeg "$WORK/data/manifest.csv" 224 "$BATCH" "$WORKERS" $((PATIENTS / BATCH))
"$BIN" shards "$WORK/shards" 224 "$BATCH" "$WORKERS" $((8 * PATIENTS / BATCH))
python3 bench/bench_loader.py torch --manifest "$WORK/data/manifest.csv" --size 224 \
  --batch "$BATCH" --workers 2 --batches $((PATIENTS / BATCH))
