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
BIN="$BUILD_DIR/src/cli/retclip"
[ -x "$BIN" ] || { echo "build it first: BUILD_DIR=$BUILD_DIR scripts/build.sh" >&2; exit 2; }
OUT=$(mktemp -d)
echo "machine: $(getconf _NPROCESSORS_ONLN) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC')"
echo "config $CONFIG $*, $STEPS timed steps after $WARMUP warm-up"
# name|env(1) words: libgomp's defaults (RETCLIP_OPENMP_DEFAULTS=1 skips retclip's), then
# retclip's default, then a passive wait.
cases=("libgomp default (spin 300000)|RETCLIP_OPENMP_DEFAULTS=1 -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY"
       "retclip default (GOMP_SPINCOUNT=10000)|-u RETCLIP_OPENMP_DEFAULTS -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY"
       "OMP_WAIT_POLICY=passive|RETCLIP_OPENMP_DEFAULTS=1 -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive")
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
      /usr/bin/time -f '%U %S' -o "$OUT/time" env $words "$BIN" bench --config "$CONFIG" "$@" \
        --data synthetic --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/b.json" >/dev/null 2>&1
      wall=$(echo "$(date +%s.%N) - $t0" | bc)
      pps=$(python3 -c "import json; print(json.load(open('$OUT/b.json'))['patients_per_s'])")
      cpu=$(awk '{print $1 + $2}' "$OUT/time")
      printf 'round %d  %-5s  %-40s %8.1f patients/s   process %5.1f s wall, %5.1f s CPU   load %s\n' \
        "$r" "$load" "$name" "$pps" "$wall" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)"
    done
    stop_busy
  done
done
