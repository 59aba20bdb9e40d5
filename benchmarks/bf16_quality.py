"""Does bf16 keep quality? fp32 and bf16 samples from the same noise, scored on the validated metric.

    python benchmarks/bf16_quality.py --data SPRITES.npy [--model M] [--n 512]
        [--samplers ddim:20,dpmpp-2m:10,ddpm:500] --out docs/eval/bf16

For each sampler: FD, precision and recall against the real sprites of fp32 (seeds 0 and 1: the metric's
seed noise) and of bf16 (seed 0, the same noise as fp32 seed 0); FD between the fp32 and bf16 sets; the
largest and mean pixel difference between fp32 and bf16 from the same noise, and the share of pixels that
differ by more than 8 grey levels. Writes bf16.json and, per sampler, a grid: fp32 on top, bf16 below.
No context (the unconditional model). Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
import json
from pathlib import Path

import numpy as np

import spritediff
from spritediff.data import base_set, load_data
from spritediff.features import load_features
from spritediff.metrics import SpriteQuality, frechet_distance
from spritediff.render import grid_image
from spritediff.specs import parse_sampler_specs


def run(model, spec, n: int, seed: int, precision: str) -> np.ndarray:
    return spritediff.sample(model, spec.name, spec.steps, n, seed=seed, frames=False, precision=precision,
                             **spec.options).images


def rounded(scores: dict) -> dict:
    return {k: round(scores[k], 4) for k in ("fd", "precision", "recall")}


def compare(model, spec, n: int, quality: SpriteQuality, features, out: Path) -> dict:
    fp32, fp32_other, bf16 = run(model, spec, n, 0, "fp32"), run(model, spec, n, 1, "fp32"), run(model, spec, n, 0, "bf16")
    diff = np.abs(fp32.astype(int) - bf16.astype(int))
    grid_image(np.concatenate([fp32[:16], bf16[:16]]), nrow=16).save(out / f"{spec.label}.png")
    return {"spec": str(spec), "fp32_seed0": rounded(quality.score(fp32)), "fp32_seed1": rounded(quality.score(fp32_other)),
            "bf16_seed0": rounded(quality.score(bf16)),
            "fd_fp32_vs_bf16": round(frechet_distance(features, fp32, bf16), 4),
            "fd_fp32_seed0_vs_seed1": round(frechet_distance(features, fp32, fp32_other), 4),
            "max_pixel_diff": int(diff.max()), "mean_pixel_diff": round(float(diff.mean()), 3),
            "share_over_8_levels": round(float((diff > 8).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--samplers", default="ddim:20,dpmpp-2m:10,ddpm:500")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = spritediff.load(args.model)
    real, _ = base_set(load_data(args.data).images.numpy())
    features = load_features()
    quality = SpriteQuality(features, real)
    rows = []
    for spec in parse_sampler_specs(args.samplers, model.schedule.T):
        rows.append(compare(model, spec, args.n, quality, features, args.out))
        print(json.dumps(rows[-1]), flush=True)
    record = {"model": args.model or "default", "n": args.n, "context": None, "rows": rows,
              "credit": "Sprites by ElvGames, FrootsnVeggies and kyrise"}
    (args.out / "bf16.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
