"""Two or more models side by side, the same noise: one row per class and one row without a context.

    python benchmarks/compare_grids.py --models A.safetensors B.safetensors default@ddim:4 distilled \
        [--sampler ddim:20] [--guidance 0.5] [--per-row 8] --out compare.png

Each model's block of rows: hero, non-hero, food, spell, side-facing (its own class names) and "no context";
sample i of every model starts from the same x_T (seed 0), so the blocks differ only by the model (and sampler).
MODEL@SPEC samples that model with SPEC instead of --sampler; a distilled student always samples on its own grid
with its own guidance.
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

import spritediff
from metric_validation import labelled_rows  # benchmarks/ is on the path when a script there runs
from spritediff.specs import parse_sampler_spec


def model_rows(name: str, spec: str, guidance: float, per_row: int) -> list[tuple[str, np.ndarray]]:
    """(label: class name, (per_row, H, W, C) uint8) for each class of the model, then "no context"."""
    model = spritediff.load(name)
    if model.student is not None:  # its own sampler, grid and guidance, or none at all
        label, sampler, steps, options, guidance = f"{model_label(name)} ({calls_text(model.student.calls)})", \
            model.student.sampler, None, {}, None
    else:
        parsed = parse_sampler_spec(spec)
        label, sampler, steps, options = f"{model_label(name)} {spec}", parsed.name, parsed.steps, parsed.options
    contexts = torch.eye(len(model.classes)).repeat_interleave(per_row, dim=0)
    common = dict(seed=0, frames=False, **options)
    with_class = spritediff.sample(model, sampler, steps, n=len(contexts), context=contexts, guidance=guidance,
                                   **common).images
    without = spritediff.sample(model, sampler, steps, n=per_row, context=None, **common).images
    return [(f"{label}: {c}", images) for c, images in
            [*zip(model.classes, np.split(with_class, len(model.classes))), ("no context", without)]]


def calls_text(calls: int) -> str:
    """"1 call", "4 calls": a student's model calls per sample."""
    return f"{calls} call{'s' * (calls != 1)}"


def model_label(path: str) -> str:
    """A model's row label: its file name, or its folder's where the file is a run's model.safetensors."""
    return Path(path).parent.name if Path(path).stem == "model" else Path(path).stem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help="model files or shipped names (default, distilled), each optionally MODEL@SAMPLER")
    parser.add_argument("--sampler", default="ddim:20")
    parser.add_argument("--guidance", type=float, default=0.5)
    parser.add_argument("--per-row", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = [row for m in args.models
            for row in model_rows(*(m.split("@", 1) if "@" in m else (m, args.sampler)), args.guidance, args.per_row)]
    labelled_rows(rows, args.out)
    print(f"-> {args.out} (default sampler {args.sampler}, guidance {args.guidance:g} with a class, seed 0)")


if __name__ == "__main__":
    main()
