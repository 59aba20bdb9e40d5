"""One model, the same noise, one block of rows per (context, sampler) setting.

    python benchmarks/sampler_grids.py [--model M] --contexts none,mix --samplers ddim:20 --n 48 --out a.png
    python benchmarks/sampler_grids.py --contexts mix --samplers ddim:20,ddpm:20,ddpm:100,ddpm:500 --n 36 --out b.png

Every block samples sprites 1..n from the noise streams (seed, i), so blocks differ only by their setting; each
block is shown in rows of --per-row, labelled with its setting and sprite numbers. The two commands above make
docs/eval/n64/no_context_vs_mix.png and docs/eval/n64/samplers_mix.png (docs/default_model.md).
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
from pathlib import Path

import numpy as np

import spritediff
from metric_validation import labelled_rows  # benchmarks/ is on the path when a script there runs
from spritediff.specs import parse_sampler_specs


def block(model, context: str, spec, n: int, guidance: float, seed: int) -> np.ndarray:
    """(n, H, W, C) uint8: n sprites of one setting; context 'none' is the unconditional model."""
    return spritediff.sample(model, spec.name, spec.steps, n=n, context=context, guidance=guidance, seed=seed,
                             frames=False, **spec.options).images


def labelled_blocks(label: str, images: np.ndarray, per_row: int) -> list[tuple[str, np.ndarray]]:
    """[("label, 1-12", (12,H,W,C)), ("label, 13-24", ...), ...]."""
    return [(f"{label}, {lo + 1}-{min(lo + per_row, len(images))}", images[lo:lo + per_row])
            for lo in range(0, len(images), per_row)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model .safetensors (default: the shipped one)")
    parser.add_argument("--contexts", default="none,mix", help="comma-separated context specs, e.g. none,mix,hero")
    parser.add_argument("--samplers", default="ddim:20", help="comma-separated sampler specs")
    parser.add_argument("--n", type=int, default=48, help="sprites per setting")
    parser.add_argument("--per-row", type=int, default=12)
    parser.add_argument("--guidance", type=float, default=0.5, help="used with a context")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output .png")
    args = parser.parse_args()
    model = spritediff.load(args.model)
    rows = []
    for context in args.contexts.split(","):
        for spec in parse_sampler_specs(args.samplers, model.schedule.T):
            images = block(model, context, spec, args.n, args.guidance, args.seed)
            rows += labelled_blocks(f"{context} {spec.label}", images, args.per_row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    labelled_rows(rows, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
