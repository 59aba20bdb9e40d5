#!/usr/bin/env bash
# The measurements behind docs/results.md, on the default model, in one go (CPU: about 20-30 minutes
# on 2 cores). Usage: bash benchmarks/results.sh SPRITES.npy [OUTDIR]   (OUTDIR default docs/eval)
set -euo pipefail
data=${1:?usage: benchmarks/results.sh SPRITES.npy [OUTDIR]}
out=${2:-docs/eval}
mkdir -p "$out"

# speed: the lab's %timeit, plus diffusers' DDIMScheduler loop on the same model
spritediff bench --samplers ddpm:500,ddim:20,dpmpp-2m:10 --n 32 --repeat 5 --json > "$out/bench_cpu_n32.json"
python benchmarks/diffusers_loop.py --n 32 --repeat 5 > "$out/diffusers_ddim20_cpu_n32.json"

# quality, the lab's claims: DDPM-500 vs DDIM, and DDIM vs DDPM on the same skipped timesteps
spritediff eval --data "$data" --n 1000 --noise-sampler ddim:20 --out "$out/lab" --samplers \
ddpm:500,ddim:10,ddim:20,ddim:50,ddim:100,ddpm:10,ddpm:20,ddpm:50,ddpm:100,\
ddpm:10:variance=posterior,ddpm:20:variance=posterior,ddpm:50:variance=posterior,ddpm:100:variance=posterior

# quality of the few-step solvers at NFE 5, 10, 20, 50 (heun: 2 calls a step, 1 on the last)
specs=""
for s in ddim dpmpp-2m dpmpp-3m unipc euler plms; do specs+="$s:5,$s:10,$s:20,$s:50,"; done
specs+="heun:3,heun:5,heun:10,heun:25"
spritediff eval --data "$data" --n 1000 --noise-sampler ddim:20 --out "$out/solvers" --samplers "$specs"

# guidance: FD and class accuracy against the weight, random classes
for w in 0 0.5 1 2 4; do
  spritediff eval --data "$data" --n 1000 --context random --guidance "$w" --noise-sampler ddim:20 \
    --samplers ddim:20 --out "$out/guidance_w$w"
done
