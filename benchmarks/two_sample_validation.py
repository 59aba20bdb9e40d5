"""Does the two-sample test see damage, and is it at chance when there is none? (docs/metric.md)

    python benchmarks/two_sample_validation.py --data SPRITES.npy --out docs/metric [--n 512]

The real sprites are split by sprite into two disjoint halves: n sprites of half A play the samples, half B the
real set. Undamaged, the test must score 0.5 within its noise; each disturbance of spritediff.disturbances at
rising levels must raise it. Writes two_sample.json and two_sample.png (beside FD's curves of
disturbances.json, when that file is in --out). Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import spritediff
from spritediff.data import base_set, load_data
from spritediff.disturbances import DISTURBANCES
from spritediff.features import sprite_groups
from spritediff.two_sample import two_sample_test
from spritediff.validation import LEVELS


def disjoint_halves(real: np.ndarray, n: int, seed: int = 0):
    """n sprites of half A (the stand-in samples), and half B with its group ids (the real set)."""
    groups = sprite_groups(real)
    rng = np.random.default_rng([seed, 5])
    in_a = np.isin(groups, rng.permutation(groups.max() + 1)[:(groups.max() + 1) // 2])
    a = real[in_a][rng.permutation(in_a.sum())[:n]]
    return a, real[~in_a], np.unique(groups[~in_a], return_inverse=True)[1]


def curves(samples, real, real_groups, levels) -> dict:
    """{disturbance: [test result at each level]}; level 0 is the same undamaged test for every disturbance."""
    null = two_sample_test(samples, real, real_groups)
    return {name: [null if level == 0 else two_sample_test(disturb(samples, level), real, real_groups)
                   for level in levels]
            for name, disturb in DISTURBANCES.items()}


def plot(result: dict, fd_curves: dict | None, path: Path) -> None:
    panels = 2 if fd_curves else 1
    fig = Figure(figsize=(5.5 * panels, 4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    levels = result["levels"]
    for name, tests in result["curves"].items():
        axes[0].errorbar(levels, [t["accuracy"] for t in tests], yerr=[t["stderr"] for t in tests], marker="o",
                         capsize=2, label=name)
    axes[0].axhline(0.5, color="0.4", linestyle="--", linewidth=1, label="chance")
    axes[0].set(xlabel="disturbance level", ylabel="held-out accuracy of the critic",
                title=f"two-sample test, n = {result['n']}")
    if fd_curves:
        for name, scores in fd_curves["curves"].items():
            axes[1].plot(fd_curves["levels"], scores["fd"], marker="o", label=name)
        axes[1].set(xlabel="disturbance level", ylabel="FD (sprite features)", title="FD, the same disturbances",
                    yscale="symlog")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.text(0.995, 0.005, spritediff.CREDIT, ha="right", va="bottom", fontsize=6, color="0.4")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--replot", action="store_true", help="redraw two_sample.png from --out's two_sample.json")
    args = parser.parse_args()
    if args.replot:
        result = json.loads((args.out / "two_sample.json").read_text())
    else:
        real = base_set(load_data(args.data).images.numpy())[0]
        samples, reference, groups = disjoint_halves(real, args.n)
        result = {"n": len(samples), "reference_images": len(reference), "levels": list(LEVELS),
                  "curves": curves(samples, reference, groups, LEVELS), "credit": spritediff.CREDIT}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "two_sample.json").write_text(json.dumps(result, indent=1))
    fd_file = args.out / "disturbances.json"
    fd = json.loads(fd_file.read_text())["disturbances"] if fd_file.is_file() else None
    plot(result, None if fd is None else {"levels": fd["levels"], "curves": fd["curves"]["held-out half"]},
         args.out / "two_sample.png")
    for name, tests in result["curves"].items():
        print(f"{name:>16}: " + "  ".join(f"{t['accuracy']:.3f}" for t in tests))
    print(f"-> {args.out / 'two_sample.json'}, {args.out / 'two_sample.png'}")


if __name__ == "__main__":
    main()
