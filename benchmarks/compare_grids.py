"""Two or more models side by side, the same noise: one row per class and one row without a context.

    python benchmarks/compare_grids.py --models A.safetensors B.safetensors [--sampler ddim:20] \
        [--guidance 0.5] [--per-row 8] --out compare.png

Each model's block has rows hero, non-hero, food, spell, side-facing (its own class names) and "no context";
sample i of every model starts from the same x_T (seed 0), so the blocks differ only by the model.
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import spritediff  # noqa: E402
from spritediff.specs import parse_sampler_spec  # noqa: E402


def model_rows(path: str | None, spec: str, guidance: float, per_row: int) -> tuple[list[str], np.ndarray]:
    """(row names, (rows, per_row, H, W, C) uint8): one row a class, then one without a context."""
    model = spritediff.load(path)
    sampler = parse_sampler_spec(spec)
    contexts = torch.eye(len(model.classes)).repeat_interleave(per_row, dim=0)
    common = dict(seed=0, frames=False, **sampler.options)
    with_class = spritediff.sample(model, sampler.name, sampler.steps, n=len(contexts), context=contexts,
                                   guidance=guidance, **common).images
    without = spritediff.sample(model, sampler.name, sampler.steps, n=per_row, context=None, **common).images
    images = np.concatenate([with_class, without]).reshape(len(model.classes) + 1, per_row, *with_class.shape[1:])
    return [*model.classes, "no context"], images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="model files ('default' for the shipped one)")
    parser.add_argument("--sampler", default="ddim:20")
    parser.add_argument("--guidance", type=float, default=0.5)
    parser.add_argument("--per-row", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    blocks = [(m, *model_rows(None if m == "default" else m, args.sampler, args.guidance, args.per_row))
              for m in args.models]
    rows = len(blocks[0][1])
    fig, axes = plt.subplots(1, len(blocks), figsize=((0.8 * args.per_row + 1.2) * len(blocks), 0.8 * rows + 1),
                             squeeze=False)
    for ax, (name, names, images) in zip(axes[0], blocks):
        r, c, h, w, channels = images.shape
        ax.imshow(images[..., :3].transpose(0, 2, 1, 3, 4).reshape(r * h, c * w, 3), interpolation="nearest")
        ax.set_yticks([h * (i + 0.5) for i in range(r)], names, fontsize=9)
        ax.set_xticks([])
        ax.set_title(Path(name).name, fontsize=9)
    fig.text(0.99, 0.01, spritediff.CREDIT, ha="right", fontsize=7, color="grey")
    fig.suptitle(f"{args.sampler}, guidance {args.guidance:g} with a class, seed 0", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
