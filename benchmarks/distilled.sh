#!/usr/bin/env bash
# The distilled student against its teacher, the shipped default: docs/results.md, "Distillation".
#   bash benchmarks/distilled.sh SPRITES_DIR [STUDENT ...]
# STUDENT: student model files or 'distilled' (the shipped 4-call student, the default); the commands of the 1-call
# student measured beside it are in docs/results.md ("Distillation"). Each is scored by eval on the
# real labels' classes with the guidance built into it (0.5), the teacher at the same guidance with DDIM-20, DDIM-4
# and DDPM-50; then the wall times of 32 and 1,000 sprites drawn as `sample` draws them, and a grid of each from
# the same noise. About 15 minutes on an idle 2-core CPU. OUT=FOLDER writes elsewhere than docs/eval/distilled.
# Sprites by ElvGames, FrootsnVeggies and kyrise.
set -euo pipefail
dir=${1:?usage: benchmarks/distilled.sh SPRITES_DIR [STUDENT ...]}
shift
students=("${@:-distilled}")
out=${OUT:-docs/eval/distilled}
common=(--data "$dir/sprites_base1788_16x16.npy" --labels "$dir/sprite_labels_base1788.npy" --context data
        -n 512 --seed 1 --precision fp32)
mkdir -p "$out"
spritediff eval --model default --samplers ddim:20,ddim:4,ddpm:50 "${common[@]}" --out "$out/teacher"
for s in "${students[@]}"; do
  spritediff eval --model "$s" "${common[@]}" --out "$out/$(basename "$s" .safetensors)"
done
python benchmarks/distilled_speed.py --models default@ddim:20 default@ddim:4 default@ddpm:50 "${students[@]}" \
  --n 32,1000 --out "$out/speed.json"
python benchmarks/compare_grids.py --models default@ddim:20 default@ddim:4 "${students[@]}" --guidance 0.5 \
  --per-row 8 --out "$out/grids.png"
python benchmarks/distilled_table.py "$out"
