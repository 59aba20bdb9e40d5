"""Grids of a model's samples, one row per context class, for DDPM-500 and DDIM-20 (docs/ evidence).

    python benchmarks/class_grids.py [--model PATH] [--per-class 8] [--seed 0] --out docs/

Writes OUT/default_ddpm500.png and OUT/default_ddim20.png (rows: hero, non-hero, food, spell,
side-facing). Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
from pathlib import Path

import torch
from PIL.PngImagePlugin import PngInfo

import spritediff

RUNS = {"default_ddpm500.png": ("ddpm", 500), "default_ddim20.png": ("ddim", 20)}


def class_rows(n_classes: int, per_class: int) -> torch.Tensor:
    """(n_classes * per_class, n_classes) one-hot contexts, row r of the grid = class r."""
    return torch.eye(n_classes).repeat_interleave(per_class, dim=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = spritediff.load(args.model)
    contexts = class_rows(len(model.classes), args.per_class)
    for name, (sampler, steps) in RUNS.items():
        result = spritediff.sample(model, sampler, steps, n=len(contexts), context=contexts, seed=args.seed,
                                   frames=False)
        info = PngInfo()
        info.add_text("Description", f"{sampler}-{steps}, rows: {', '.join(model.classes)}")
        info.add_text("Credit", spritediff.CREDIT)
        result.grid(nrow=args.per_class, scale=6).save(args.out / name, pnginfo=info)
        print(f"{name}: {sampler}-{steps}, {result.seconds:.1f} s")


if __name__ == "__main__":
    main()
