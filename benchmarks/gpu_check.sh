#!/usr/bin/env bash
# All GPU checks in one call (the device tool runs it; budget: at most 5 minutes).
# Not yet run: no session so far was lent a GPU (issue 15).
#   bash benchmarks/gpu_check.sh            -> results under ${OUT:-gpu_out}/
# 1. the CUDA tests: graph replay equals eager, and sample() on CUDA with a CPU context tensor and guidance
#    (the context reaches the GPU before the capture) equals eager;
# 2. a sample run on CUDA with a named context and guidance, fast and eager, compared pixel by pixel;
# 3. bench on CUDA, fast path and eager, batch 32 and 2048, with diffusers' loop as the reference row.
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -m pip install -q --no-deps -e . >/dev/null 2>&1 || true
python -m pytest -q tests/test_fast.py 2>&1 | tee "$out/tests.txt"
for mode in fast eager; do
  flag=$([ "$mode" = eager ] && echo --eager)
  spritediff sample --device cuda --n 64 --context hero=1,food=0.5 --guidance 2 --precision fp32 $flag \
    --no-gif --out "$out/sample_$mode" > "$out/sample_$mode.txt" 2>&1
done
python - "$out" <<'PY' | tee "$out/sample_compare.txt"
import sys, numpy as np
a, b = (np.load(f"{sys.argv[1]}/sample_{m}/samples.npy").astype(int) for m in ("fast", "eager"))
print("fast vs eager on CUDA with context and guidance: max grey-level difference", abs(a - b).max())
PY
for n in 32 2048; do
  spritediff bench --device cuda --n "$n" --repeat 10 --samplers ddpm:500,ddim:20,dpmpp-2m:10 \
    --precision fp32,bf16 --reference diffusers --json > "$out/bench_fast_n$n.json" 2> "$out/bench_fast_n$n.err"
  spritediff bench --device cuda --n "$n" --repeat 10 --samplers ddim:20 --eager --precision fp32 --json \
    > "$out/bench_eager_n$n.json" 2> "$out/bench_eager_n$n.err"
done
ls -la "$out"
