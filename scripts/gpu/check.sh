#!/usr/bin/env bash
# Run on the CUDA machine (Python with torch 2.11.0+cu130, CMake, ninja, nvcc, no package
# registry), from the repository root with .deps/gpu made by scripts/gpu/prepare.sh:
#   scripts/gpu/check.sh OUTDIR
# 1. unpacks the Debian packages into .deps/gpu/prefix (dpkg -x), links the shared
#    libraries the machine lacks into .deps/gpu/prefix/fallback-lib;
# 2. configures build-gpu against torch's CMake prefix + that prefix, CUDA on,
#    RETCLIP_WITH_IMGCODECS=OFF; builds retclip + the test executables it runs (ninja,
#    ccache when present);
# 3. runs `ctest -L gpu` and the CPU-side bench unit tests;
# 4. benchmarks (configs/bench-vitb16-bertbase.yaml: ViT-B-16 + BERT-base, 224 px,
#    context 100, bf16): batch 128 retclip vs PyTorch eager (bench/bench_train.py) in
#    the same run; peak memory at batch 256 without / with activation checkpointing;
#    the tiny CPU preset retclip vs PyTorch on this machine's cores;
# 5. writes OUTDIR/summary.md and every log under OUTDIR. Each step has its own time
#    limit so that the whole stays well inside 8 minutes; a failed step is reported
#    and the next one still runs. Exit status: 0 when build and gpu tests passed.
# Knobs: JOBS (default nproc), STEPS / WARMUP (bench steps), BUILD_LIMIT (s, 420),
# CHECK_SKIP="compare memory cpu-bench" (steps to leave out), CHECK_TARGETS, IGNORE_PREFIX=/usr
# (find dependencies only in the prefix: how it was tested on a machine that has them in /usr).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:?usage: scripts/gpu/check.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
DEPS=$ROOT/.deps/gpu
PREFIX=$DEPS/prefix
BUILD=${BUILD_DIR:-$ROOT/build-gpu}
JOBS=${JOBS:-$(nproc)}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
PY=${PYTHON:-python3}
SUMMARY=$OUT/summary.md
status=()   # "step|result|seconds" lines for the summary

log() { echo "[check $(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/check.log"; }
# step NAME LIMIT_S CMD...: runs CMD with a time limit, output to OUT/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local s=$(date +%s)
  log "$name: $*"
  # Shell functions run in a child bash (exported with export -f; timeout needs a program).
  if declare -F "$1" >/dev/null; then
    timeout --kill-after=10 "$limit" bash -c '"$@"' _ "$@" > "$OUT/$name.log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  fi
  local rc=$?
  local took=$(( $(date +%s) - s ))
  local res=ok
  [ $rc -eq 0 ] || res="FAILED (exit $rc$([ $rc -eq 124 ] && echo ", time limit ${limit}s"))"
  status+=("$name|$res|$took")
  log "$name: $res in ${took}s"
  return $rc
}
skip() { [[ " ${CHECK_SKIP:-} " == *" $1 "* ]]; }

# ---- 0. the machine -------------------------------------------------------------------
{
  echo "date: $(date -u '+%F %T UTC')"
  echo "host: $(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "os: $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}"), glibc $(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  echo "cmake: $(cmake --version | head -1)"
  echo "ninja: $(ninja --version 2>/dev/null || echo missing)"
  echo "nvcc: $( (command -v nvcc || echo /usr/local/cuda/bin/nvcc) | xargs -I{} sh -c '{} --version 2>/dev/null | tail -2 | head -1' )"
  echo "c++: $(c++ --version | head -1)"
  echo "ccache: $(command -v ccache || echo none)"
  echo "git: $(git rev-parse --short=12 HEAD 2>/dev/null || echo '?')"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
HAVE_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)

# ---- 1. the prefix --------------------------------------------------------------------
unpack() {
  set -e
  ls "$DEPS"/debs/*.deb >/dev/null
  (cd "$DEPS/debs" && sha256sum --quiet -c SHA256SUMS)
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX/fallback-lib"
  for d in "$DEPS"/debs/*.deb; do dpkg -x "$d" "$PREFIX"; done
  # Shared libraries this machine lacks, by soname; what it has wins (its own glibc world).
  local lib=$PREFIX/usr/lib/x86_64-linux-gnu
  for f in "$lib"/*.so.* "$PREFIX"/lib/x86_64-linux-gnu/*.so.*; do
    [ -e "$f" ] || continue
    local so
    so=$(objdump -p "$f" 2>/dev/null | awk '/SONAME/{print $2}')
    [ -n "$so" ] || so=$(basename "$f")
    [ -e "$PREFIX/fallback-lib/$so" ] && continue
    if ! /sbin/ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$so "; then
      ln -sf "$f" "$PREFIX/fallback-lib/$so"
      echo "fallback: $so"
    fi
  done
  # Gloo headers for the distributed module (c10d's ProcessGroupGloo.hpp).
  if [ ! -d "$ROOT/.deps/gloo/include" ] && [ -d "$DEPS/gloo/include" ]; then
    mkdir -p "$ROOT/.deps" && cp -r "$DEPS/gloo" "$ROOT/.deps/gloo"
  fi
  echo "prefix: $(du -sh "$PREFIX" | cut -f1)"
}
export ROOT DEPS PREFIX BUILD
export -f unpack
step unpack 60 unpack || { log "cannot unpack .deps/gpu: run scripts/gpu/prepare.sh on a machine with the registry"; }
export LD_LIBRARY_PATH=$PREFIX/fallback-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_PATH=$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$PREFIX

# ---- 2. configure and build -----------------------------------------------------------
TORCH_PREFIX=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')
if command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-$DEPS/ccache} CCACHE_BASEDIR=$ROOT
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
fi
export TORCH_PREFIX IGNORE_PREFIX=${IGNORE_PREFIX:-} CMAKE_ARGS=${CMAKE_ARGS:-}
configure() {
  local launcher=() nvcc_arg=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  [ -x /usr/local/cuda/bin/nvcc ] || nvcc_arg=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)")
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DRETCLIP_WITH_IMGCODECS=OFF -DRETCLIP_BUILD_TESTS=ON \
    -DCMAKE_PREFIX_PATH="$PREFIX/usr;$TORCH_PREFIX" \
    -DCMAKE_IGNORE_PREFIX_PATH="$IGNORE_PREFIX" \
    -DOpenCV_DIR="$ROOT/scripts/gpu/cmake" -DRETCLIP_GPU_PREFIX="$PREFIX" \
    -DCMAKE_BUILD_RPATH="$PREFIX/usr/lib/x86_64-linux-gnu;$PREFIX/fallback-lib" \
    "${nvcc_arg[@]}" "${launcher[@]}" ${CMAKE_ARGS:-}
}
export -f configure
TARGETS=${CHECK_TARGETS:-retclip test_gpu test_train}
build_ok=1
step configure 120 configure || build_ok=0
if [ $build_ok = 1 ]; then
  # Which package each dependency came from (the prefix, not the system).
  grep -E '^(yaml-cpp|spdlog|fmt|CLI11|nlohmann_json|GTest|OpenCV|Torch)_DIR|^SentencePiece_(LIBRARY|INCLUDE_DIR)' \
    "$BUILD/CMakeCache.txt" > "$OUT/found.txt" || true
  # shellcheck disable=SC2086
  step build "${BUILD_LIMIT:-420}" cmake --build "$BUILD" -j "$JOBS" --target $TARGETS || build_ok=0
fi
BIN=$BUILD/src/cli/retclip

# ---- 3. tests -------------------------------------------------------------------------
tests_ok=0
if [ $build_ok = 1 ]; then
  step ctest-gpu 240 ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 200 && tests_ok=1
  step ctest-bench-unit 120 ctest --test-dir "$BUILD" -R '^(Flops|Bench)\.' --output-on-failure
fi

# ---- 4. benchmarks --------------------------------------------------------------------
CFG=configs/bench-vitb16-bertbase.yaml
if [ $build_ok = 1 ] && [ "$HAVE_CUDA" = 1 ]; then
  # Batch 128, bf16: retclip, then PyTorch eager with the same setup (one run).
  skip compare || step bench-b128-compare 150 env BUILD_DIR="$BUILD" OUT="$OUT/b128" STEPS="$STEPS" WARMUP="$WARMUP" \
    scripts/bench_train.sh "$CFG"
  skip memory || {
    step bench-b256 75 "$BIN" bench --config "$CFG" --set train.batch_size=256 --steps 5 --warmup 2 \
      --json "$OUT/b256.json"
    step bench-b256-ckpt 75 "$BIN" bench --config "$CFG" --set train.batch_size=256 \
      --set train.grad_checkpointing=true --steps 5 --warmup 2 --json "$OUT/b256-ckpt.json"
  }
else
  log "benchmarks on CUDA skipped: $([ "$HAVE_CUDA" = 1 ] && echo 'build failed' || echo 'no CUDA device')"
fi
if [ $build_ok = 1 ] && ! skip cpu-bench; then
  # CPU target: tiny preset, retclip vs PyTorch eager, same threads, same run.
  step bench-cpu-tiny 150 env BUILD_DIR="$BUILD" OUT="$OUT/cpu-tiny" STEPS=10 WARMUP=2 ROUNDS=2 THREADS="${CPU_THREADS:-$(nproc)}" \
    scripts/bench_train.sh configs/tiny-cpu.yaml --set train.device=cpu --set train.precision=fp32
fi

# ---- 5. summary -----------------------------------------------------------------------
{
  echo "# retclip GPU check"
  echo
  echo '```'
  cat "$OUT/machine.txt"
  echo '```'
  echo
  echo "| step | result | seconds |"
  echo "| --- | --- | --- |"
  for s in "${status[@]}"; do echo "| ${s//|/ | } |"; done
  echo
  echo "Total: $(( $(date +%s) - T0 )) s."
  if [ -f "$OUT/found.txt" ]; then echo; echo "Dependencies found:"; echo '```'; cat "$OUT/found.txt"; echo '```'; fi
  if [ -f "$OUT/ctest-gpu.log" ]; then
    echo; echo "ctest -L gpu:"; echo '```'
    grep -E "tests passed|tests failed|Skipped|\*\*\*Failed|Passed|Not Run" "$OUT/ctest-gpu.log" | tail -15
    echo '```'
  fi
  echo
  "$PY" - "$OUT" <<'PYEOF'
import glob, json, os, sys
out = sys.argv[1]
rows = []
for name in ["b128/retclip.json", "b128/pytorch.json", "b256.json", "b256-ckpt.json",
             "cpu-tiny/retclip.json", "cpu-tiny/pytorch.json"]:
    p = os.path.join(out, name)
    if os.path.exists(p):
        with open(p) as f:
            rows.append((name, json.loads(f.readline())))
if rows:
    print("| run | impl | device | batch | prec | ckpt | patients/s | step ms | fwd / bwd / opt ms | peak GiB | MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, j in rows:
        mfu = j.get("mfu")
        print(f"| {n} | {j['impl']} | {j.get('device_name', j['device'])} | {j['batch']} | {j['precision']} | "
              f"{'yes' if j.get('grad_checkpointing') else 'no'} | {j['patients_per_s']:.1f} | {j['step_ms']:.1f} | "
              f"{j['forward_ms']:.1f} / {j['backward_ms']:.1f} / {j['optimizer_ms']:.1f} | "
              f"{j['peak_memory_gib']:.2f} ({j['memory_kind']}) | {'' if mfu is None else f'{100 * mfu:.1f}%'} |")
    d = dict(rows)
    for tag in ["b128", "cpu-tiny"]:
        a, b = d.get(f"{tag}/retclip.json"), d.get(f"{tag}/pytorch.json")
        if a and b:
            print(f"\n{tag}: retclip / PyTorch eager = {a['patients_per_s'] / b['patients_per_s']:.2f}x patients/s "
                  f"(target >= 1.1x)")
    a = d.get("b128/retclip.json")
    if a and a.get("mfu") is not None:
        print(f"\nb128 MFU {100 * a['mfu']:.1f}% (target >= 50%), {a['gflop_per_patient']:.1f} GFLOP/patient/step")
else:
    print("No benchmark results.")
PYEOF
} > "$SUMMARY"
cat "$SUMMARY"
log "done in $(( $(date +%s) - T0 ))s; summary in $SUMMARY"
[ $build_ok = 1 ] && [ $tests_ok = 1 ]
