"""OpenMP wait-policy probe (docs/PERFORMANCE.md, "Throughput under CPU contention"):
for 8 s, a small GEMM + two element-wise ops of the size of the tiny preset's layers,
on LibTorch's intra-op threads (libgomp, as retclip). Prints iterations/s and the CPU
cores used. Run it under each setting, e.g.
    env -u OMP_WAIT_POLICY python3 bench/omp_wait_probe.py 2
    env OMP_WAIT_POLICY=PASSIVE python3 bench/omp_wait_probe.py 2
"""
import os
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
x, w = torch.randn(256, 128), torch.randn(128, 512)
t0, c0, n = time.time(), time.process_time(), 0
while time.time() - t0 < 8:
    y = torch.relu(x @ w)
    y = y * 1.0001 + 0.5
    n += 1
wall, cpu = time.time() - t0, time.process_time() - c0
print(f"threads={threads} GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '-')} "
      f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}: {n / wall:8.0f} iterations/s, "
      f"CPU {cpu / wall:4.2f} cores, load {os.getloadavg()[0]:.1f}")
