#!/usr/bin/env bash
# Every measurement behind docs/ on the shipped default model, in one go.
#   bash benchmarks/results.sh SPRITES_DIR [N]
# SPRITES_DIR holds sprites_base1788_16x16.npy and sprite_labels_base1788.npy (the course's two files
# work too, renamed). N: samples per eval row (default 512, the N of every page in docs/ but the default model's
# own tables, section 9, at 1,000).
# On an idle 2-core CPU with N=512 and the n_feat-64 default: about 95 minutes (2026-11-27), and
# about 20 more for section 9 (estimated from its runs one by one, 2026-11-28). Run it on an idle
# machine: it times things. LONG=1 adds the measurements that take longer (section 8, about 100 minutes more);
# without it they are kept as stored. QUALITY_ONLY=1 skips the timings (speed, serving, memory): they depend on
# the net's architecture, not on its weights, so a retrained model of the same shape keeps them.
# Sprites by ElvGames, FrootsnVeggies and kyrise.
set -euo pipefail
dir=${1:?usage: benchmarks/results.sh SPRITES_DIR [N]}
n=${2:-512}
data="$dir/sprites_base1788_16x16.npy"
labels="$dir/sprite_labels_base1788.npy"
out=docs/eval
mkdir -p "$out" docs/metric

# 1. the metric: disturbance curves; the checkpoints of the default model's training run, and the previous
#    default (n_feat 32, from git history) against the default and the run's step-8,000 weights (both only if
#    that run's folder, runs/n64/, is here: docs/default_model.md makes it)
validation=(--data "$data" --labels "$labels" --n 512 --out docs/metric)
[[ -f runs/n64/model.safetensors ]] && validation+=(--run runs/n64/model.safetensors)
if [[ -f runs/n64/model-step8000-raw.safetensors ]]; then
  git show bd64166:spritediff/assets/sprites_context.safetensors > runs/previous_default.safetensors
  validation+=(--compare runs/previous_default.safetensors spritediff/assets/sprites_context.safetensors \
    runs/n64/model-step8000.safetensors runs/n64/model-step8000-raw.safetensors)
fi
python benchmarks/metric_validation.py "${validation[@]}"

timings() { [[ -z "${QUALITY_ONLY:-}" ]]; }

# 2. speed: the lab's %timeit at each precision, with diffusers' DDIMScheduler loop on the same model as reference;
#    the CPU fast path at batch 1/32/256 and n_feat 32/64, and whether torch.compile pays
if timings; then
  spritediff bench --samplers ddpm:500,ddim:20,dpmpp-2m:10 --n 32 --repeat 5 --precision fp32,bf16 \
    --reference diffusers --json > "$out/bench_cpu_n32.json"
  python benchmarks/cpu_speed.py --out "$out/cpu_speed"
  python benchmarks/bf16_crossover.py --out "$out/cpu_speed/bf16_crossover.json"
fi
#    bf16 against fp32 on the validated metric
python benchmarks/bf16_quality.py --data "$data" --n 512 --samplers ddim:20,dpmpp-2m:10 --out "$out/bf16_default"
python benchmarks/bf16_quality.py --data "$data" --n 256 --out "$out/bf16_default_all" \
  --samplers ddpm:500,ddim:10,ddpm:10,euler:10,heun:6,dpmpp-3m:10,unipc:10,plms:10,ddim:50,dpmpp-2m:5
#    the playground's dynamic batching
if timings; then python benchmarks/serve_batching.py --threads 2 --out "$out/serve_batching.json"; fi

# 3. quality, the lab's claims: DDPM-500 vs DDIM, and DDIM vs DDPM on the same skipped timesteps
#    (no context: the unconditional model the context dropout trained)
spritediff eval --data "$data" --n "$n" --context none --noise-sampler ddim:20 --precision fp32 --out "$out/lab" --samplers \
ddpm:500,ddim:10,ddim:20,ddim:50,ddim:100,ddpm:10,ddpm:20,ddpm:50,ddpm:100,\
ddpm:10:variance=posterior,ddpm:20:variance=posterior,ddpm:50:variance=posterior,ddpm:100:variance=posterior

# 4. the few-step solvers at NFE 5, 10, 20, 50 (heun: 2 calls a step, 1 on the last)
specs=""
for s in ddim dpmpp-2m dpmpp-3m unipc euler plms; do specs+="$s:5,$s:10,$s:20,$s:50,"; done
specs+="heun:3,heun:5,heun:10,heun:25"
spritediff eval --data "$data" --n "$n" --context none --noise-sampler ddim:20 --precision fp32 --out "$out/solvers" --samplers "$specs"
python benchmarks/solver_tables.py --out "$out/solver_tables.json"  # docs/solvers.md: every number, on the oracle

# 5. guidance: FD and class accuracy against the weight, classes drawn from the real labels
for w in 0 0.5 1 2 4; do
  spritediff eval --data "$data" --labels "$labels" --n "$n" --context data --guidance "$w" \
    --noise-sampler ddim:20 --precision fp32 --samplers ddim:20 --out "$out/guidance_w$w"
done

# 6. pictures of the default model: class grids, the latent space; the reconstruction table
python benchmarks/class_grids.py --out docs
python benchmarks/latent_figures.py --out docs/latent
python benchmarks/latent_table.py --data "$data" --labels "$labels" --n 32 --fp64-n 4 --out "$out/latent"
python benchmarks/inpainting_oracle.py

# 7. peak memory of `sample` (DDIM-1) at n = 1,000 and 100,000 (n = 1,000,000 is in section 8)
mkdir -p "$out/memory"
memory() {
  OMP_NUM_THREADS=1 /usr/bin/time -v -o "$out/memory/n$1.txt" \
    spritediff sample --sampler ddim --steps 1 --n "$1" --out "runs/memory_n$1"
}
if timings; then
  memory 1000
  memory 100000
fi

# 8. the long ones, only with LONG=1: peak memory at n = 1,000,000 (about an hour), and the pair of
#    3,000-step training runs that differ only in --precision (about 40 minutes, side by side)
if [[ -n "${LONG:-}" ]]; then
  memory 1000000
  for p in fp32 bf16; do
    OMP_NUM_THREADS=1 spritediff train --data "$data" --labels "$labels" --out "runs/precision_cmp/$p.safetensors" \
      --n-feat 32 --steps 3000 --precision "$p" --ckpt-every 1000 --seed 0 --no-ema-warmup --overwrite &
  done
  wait
  python benchmarks/train_precision.py --runs runs/precision_cmp --out "$out/train_precision"
  for p in fp32 bf16; do
    spritediff eval --model "runs/precision_cmp/$p.safetensors" --data "$data" --labels "$labels" --n "$n" \
      --context data --guidance 0 --samplers ddim:20,ddpm:100 --noise-sampler ddim:20 --precision fp32 \
      --out "$out/train_precision/eval_$p"
  done
fi

# 9. docs/default_model.md on the default model at n = 1,000 (that page's N): the unconditional model, the real
#    labels and the training class mix at guidance 0 and 0.5, DDPM at 20 and 50 steps (sample's default) and with
#    the posterior variance, DDPM-50 at guidance 0, 1 and 2; the pictures beside them (about 20 minutes)
page=(--data "$data" --labels "$labels" --n 1000)
spritediff eval "${page[@]}" --noise-sampler ddim:20 --context none --samplers ddim:20,dpmpp-2m:10 \
  --out "$out/n64/final28608_none"
spritediff eval "${page[@]}" --noise-sampler ddim:20 --context data --guidance 0 --samplers ddim:20,dpmpp-2m:10 \
  --out "$out/n64/final28608_data"
for w in 0 0.5; do
  spritediff eval "${page[@]}" --noise-sampler ddim:20 --context mix --guidance "$w" --samplers ddim:20,dpmpp-2m:10 \
    --out "$out/n64/final28608_mix_w$w"
done
spritediff eval "${page[@]}" --noise-sampler ddim:20 --context mix --guidance 0.5 \
  --samplers ddpm:20,ddpm:50 --out "$out/n64/final28608_mix_w0.5_ddpm"
for w in 0 1 2; do
  spritediff eval "${page[@]}" --noise-sampler ddpm:50 --context mix --guidance "$w" --samplers ddpm:50 \
    --out "$out/n64/final28608_mix_w${w}_ddpm50"
done
spritediff eval "${page[@]}" --context mix --guidance 0.5 --noise-sampler ddpm:50:variance=posterior \
  --samplers ddpm:50:variance=posterior,ddpm:20:variance=posterior --out "$out/n64/final28608_mix_w0.5_ddpm_posterior"
python benchmarks/sampler_grids.py --contexts none,mix --samplers ddim:20 --n 48 --out "$out/n64/no_context_vs_mix.png"
python benchmarks/sampler_grids.py --contexts mix --samplers ddim:20,ddpm:20,ddpm:100,ddpm:500 --n 36 \
  --out "$out/n64/samplers_mix.png"

# 10. the shipped distilled student against its teacher (docs/results.md, "Distillation"), with the 2- and 1-call
#     students of its run where that run's folder is here (docs/default_model.md makes it); about 15 minutes
students=(distilled)
for s in runs/distill/student-calls2.safetensors runs/distill/student.safetensors; do
  if [[ -f $s ]]; then students+=("$s"); fi
done
bash benchmarks/distilled.sh "$dir" "${students[@]}"
