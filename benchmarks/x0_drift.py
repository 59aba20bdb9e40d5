"""Where a sampler's brightness drifts: the batch mean of x0_hat at every step, against the data's mean.

    python benchmarks/x0_drift.py --models default runs/x/model.safetensors --data D/sprites_base1788_16x16.npy \
        --labels D/sprite_labels_base1788.npy --samplers ddim:20,ddpm:50 --out drift.png

By the tower property, E over x_t ~ q_t of E[x0 | x_t] is E[x0] at every t: on a perfect model whose sampler keeps
x_t on the forward process's marginals, the mean of x0_hat over many samples is the data's mean at every step.
Where a curve leaves the data's line, the sampler's x_t has left those marginals (or the net is biased there).
--start-mean V adds V sqrt(ab_T) times the mean training image to x_T (benchmarks/sampler_probes.py, start-mean).
Prints, per model and sampler, x0_hat's mean at ten steps and the finished images' mean brightness (0..255) and
share of near-black pixels (every channel below 20); plots the curves.
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import spritediff
from compare_grids import model_label
from sampler_probes import add_start_mean
from spritediff.pixels import to_model_space

DARK = 20


def x0_means(model, sampler: str, steps: int, context: np.ndarray, seed: int) -> tuple[list, np.ndarray]:
    """[(t, mean of x0_hat over the batch in [-1, 1])] along one run, in step order, and its images (n, H, W, 3)."""
    record: dict[int, list[float]] = {}

    def keep(info, first):
        record.setdefault(info.t, []).append(info.x0_hat.float().mean().item())

    result = spritediff.sample(model, sampler, steps, n=len(context), context=context, guidance=0, seed=seed,
                               frames=False, precision="fp32", callback=keep)
    curve = [(t, float(np.mean(means))) for t, means in sorted(record.items(), reverse=True)]
    return curve, np.asarray(result.images)


def brightness(images: np.ndarray) -> str:
    """Mean pixel value (0..255) and the share of pixels with every channel below DARK."""
    return f"mean {images.astype(np.float32).mean():5.1f}, near-black {100 * (images.max(-1) < DARK).mean():4.1f} %"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="model files or shipped names")
    p.add_argument("--data", required=True)
    p.add_argument("--labels", required=True, help="label contexts are drawn from its rows")
    p.add_argument("--samplers", default="ddim:20,ddpm:50")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start-mean", type=float, default=0.0)
    p.add_argument("--out", required=True, help="the plot (.png)")
    args = p.parse_args()
    if args.start_mean:
        add_start_mean(args.data, args.start_mean)
    data = np.load(args.data)
    labels = np.load(args.labels).astype(np.float32)
    context = labels[np.random.default_rng(args.seed).choice(len(labels), args.n)]
    data_mean = float(to_model_space(data).mean())
    print(f"data: x0 mean {data_mean:+.3f}, {brightness(data)}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in args.models:
        model = spritediff.load(name)
        for spec in args.samplers.split(","):
            sampler, steps = spec.split(":")
            curve, images = x0_means(model, sampler, int(steps), context, args.seed)
            shown = curve[:: max(1, len(curve) // 10)]
            print(f"{name} {spec}: " + " ".join(f"t{t} {m:+.3f}" for t, m in shown) + f" | {brightness(images)}")
            ax.plot([t for t, _ in curve], [m for _, m in curve], marker=".", label=f"{model_label(name)} {spec}")
    ax.axhline(data_mean, color="k", ls="--", label="data mean")
    ax.invert_xaxis()
    ax.set_xlabel("t (sampling runs left to right, from T = 500 to 0)")
    ax.set_ylabel("batch mean of x0_hat, [-1, 1]")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
