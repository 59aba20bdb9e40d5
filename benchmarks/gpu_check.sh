#!/usr/bin/env bash
# All GPU checks in one call (the device tool runs it; budget: at most 5 minutes).
# Not yet run: the session that wrote it had no GPU (issue 6 is open on it).
#   bash benchmarks/gpu_check.sh            -> results under ${OUT:-gpu_out}/
# 1. the CUDA tests (graph replay equals eager), 2. bench on CUDA, fast path and eager, batch 32 and 2048,
# 3. the CPU bench row is not taken here (CPU numbers come from the CPU machine).
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -m pip install -q --no-deps -e . >/dev/null 2>&1 || true
python -m pytest -q tests/test_fast.py 2>&1 | tee "$out/tests.txt"
for n in 32 2048; do
  spritediff bench --device cuda --n "$n" --repeat 10 --samplers ddpm:500,ddim:20,dpmpp-2m:10 --json \
    > "$out/bench_fast_n$n.json" 2> "$out/bench_fast_n$n.err"
  spritediff bench --device cuda --n "$n" --repeat 10 --samplers ddim:20 --eager --json \
    > "$out/bench_eager_n$n.json" 2> "$out/bench_eager_n$n.err"
done
python benchmarks/diffusers_loop.py --device cuda --n 32 --repeat 10 > "$out/diffusers_n32.json"
ls -la "$out"
