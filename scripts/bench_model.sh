#!/usr/bin/env bash
# Model benchmark (docs/PERFORMANCE.md, "Model forward+backward (CPU)" and "Training step
# (CPU)"): retclip C++ (bench/bench_model.cpp) vs PyTorch eager (bench/bench_model.py), same
# sizes, same threads, same run. Each process alternates its step kinds; the two processes
# take turns ROUNDS times, and the medians are over all timed steps of all rounds.
#   fwd_bwd      forward (both eyes + texts) + tripartite loss + backward (+ zero_grad)
#   train        the same + AdamW step (retclip: train::build_adamw; PyTorch: torch.optim.AdamW
#                default implementation); train_fused: PyTorch with AdamW(fused=True)
#   BUILD_DIR=build scripts/bench_model.sh      (needs the bench_model target built)
#   THREADS=2 BATCH=8 STEPS=5 ROUNDS=2 SIZES="tiny base" scripts/bench_model.sh
# RETCLIP_BENCH_OPTIM=libtorch makes the C++ side use torch::optim::AdamW (for comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
STEPS=${STEPS:-5}
ROUNDS=${ROUNDS:-2}
SIZES=${SIZES:-"tiny base"}
BIN="$BUILD_DIR/bench/bench_model"
[ -x "$BIN" ] || { echo "build it first: cmake --build $BUILD_DIR --target bench_model" >&2; exit 2; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f1,2 | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "threads $THREADS, batch $BATCH patients (2 images + 1 text each), $ROUNDS rounds x $STEPS timed steps per kind after 1 warm-up"
for size in $SIZES; do
  case $size in
    tiny) args=(vit-tiny bert-tiny 8000 "$BATCH" 64) ;;
    base) args=(ViT-B-16 RoBERTa-wwm-ext-base-chinese 21128 "$BATCH" 100) ;;
    *) echo "unknown size $size (tiny|base)" >&2; exit 2 ;;
  esac
  results=()
  for ((r = 1; r <= ROUNDS; r++)); do
    cpp=$(OMP_NUM_THREADS=$THREADS "$BIN" "${args[@]}" "$THREADS" "$STEPS")
    echo "$cpp"
    py=$(OMP_NUM_THREADS=$THREADS python3 bench/bench_model.py "${args[@]}" "$THREADS" "$STEPS")
    echo "$py"
    results+=("$cpp" "$py")
  done
  python3 - "$size" "${results[@]}" <<'PY'
import json, statistics, sys
size, rows = sys.argv[1], [json.loads(x) for x in sys.argv[2:]]
def med(impl, key):
    v = [t for r in rows if r["impl"] == impl for t in r[key]]
    return statistics.median(v), len(v)
cfb, n = med("retclip-cpp", "fwd_bwd_ms"); ctr, _ = med("retclip-cpp", "train_ms")
copt, _ = med("retclip-cpp", "optim_ms")
pfb, _ = med("pytorch-eager", "fwd_bwd_ms"); ptr, _ = med("pytorch-eager", "train_ms")
ptf, _ = med("pytorch-eager", "train_fused_ms")
rss = lambda impl: max(r["peak_rss_mib"] for r in rows if r["impl"] == impl)
cfbc, _ = med("retclip-cpp", "fwd_bwd_cpu_ms"); ctrc, _ = med("retclip-cpp", "train_cpu_ms")
pfbc, _ = med("pytorch-eager", "fwd_bwd_cpu_ms"); ptrc, _ = med("pytorch-eager", "train_cpu_ms")
ptfc, _ = med("pytorch-eager", "train_fused_cpu_ms")
print(f"== {size}: medians over {n} steps per kind (ms/step)")
print(f"fwd+bwd      retclip {cfb:9.1f}  pytorch {pfb:9.1f}  pytorch/retclip {pfb / cfb:.2f}x")
print(f"train step   retclip {ctr:9.1f}  pytorch {ptr:9.1f}  pytorch/retclip {ptr / ctr:.2f}x"
      f"   (pytorch fused=True {ptf:.1f}: {ptf / ctr:.2f}x)")
print(f"CPU time: fwd+bwd {cfbc:.1f} vs {pfbc:.1f} ({pfbc / cfbc:.2f}x), train {ctrc:.1f} vs "
      f"{ptrc:.1f} ({ptrc / ctrc:.2f}x; fused=True {ptfc:.1f}: {ptfc / ctrc:.2f}x)")
print(f"retclip optimizer step alone: {copt:.2f} ms; peak RSS retclip {rss('retclip-cpp')} / "
      f"pytorch {rss('pytorch-eager')} MiB")
PY
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
