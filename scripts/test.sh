#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every ctest suite.
# Extra arguments go to ctest (e.g. scripts/test.sh -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/setup.sh
t1=$(date +%s)
bash scripts/build.sh
t2=$(date +%s)
BUILD_DIR=${BUILD_DIR:-build}
# Leave one core to the test processes themselves: LibTorch threads per test = 1.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
t3=$(date +%s)
echo "test.sh: setup $((t1 - t0))s, build $((t2 - t1))s, tests $((t3 - t2))s"
