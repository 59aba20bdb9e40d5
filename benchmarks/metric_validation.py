"""The evidence of docs/metric.md: does the sprite feature space see quality?

    python benchmarks/metric_validation.py --data SPRITES.npy --labels LABELS.npy \
        [--run runs/n64/model.safetensors] [--compare OLD.safetensors NEW.safetensors] --out docs/metric

1. Disturbance curves (Heusel et al. 2017, Fig. 1): real sprites damaged at rising levels, scored
   against the real set (same images: level 0 is FD 0) and against the other half of the real set
   (split by sprite: level 0 is the real-vs-real noise). Writes disturbances.png, disturbances.json.
2. Checkpoints of one training run (--run: the model file of a run made with --snapshots): EMA and
   raw weights at each snapshot step and the final model, DDIM-20, contexts from the real labels,
   guidance 0. Writes checkpoints.png (FD, precision, recall against steps), checkpoint_grids.png
   (one row per checkpoint, the same noise) and checkpoints.json.
3. --compare: two models, the same settings; writes compare.json and compare_grids.png.
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import spritediff
from spritediff.disturbances import DISTURBANCES
from spritediff.evaluate import label_rows, real_halves
from spritediff.features import load_features
from spritediff.metrics import SpriteQuality
from spritediff.render import grid_image, tile
from spritediff.engine import sample_generators
from spritediff.validation import LEVELS, disturbance_curves, rises

METRICS = ("fd", "precision", "recall")


def figure(rows: int, cols: int, size=(4, 3)) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), dpi=110)
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(rows, cols, squeeze=False))


def credit(fig: Figure) -> None:
    fig.text(0.995, 0.005, spritediff.CREDIT, ha="right", va="bottom", fontsize=6, color="0.4")


def disturbance_section(features, real: np.ndarray, out: Path) -> dict:
    half_a, half_b = real_halves(real)
    curves = {"same images": disturbance_curves(features, real, real),
              "held-out half": disturbance_curves(features, real[half_a], real[half_b])}
    fig, axes = figure(2, len(DISTURBANCES))
    for row, (protocol, by_name) in enumerate(curves.items()):
        for col, (name, scores) in enumerate(by_name.items()):
            ax = axes[row, col]
            ax.plot(LEVELS, [s["fd"] for s in scores], marker="o", label="FD")
            ax.set_title(f"{name}\n({protocol})", fontsize=9)
            ax.set_xlabel("damage level")
            twin = ax.twinx()
            twin.plot(LEVELS, [s["precision"] for s in scores], color="tab:green", marker=".", label="precision")
            twin.plot(LEVELS, [s["recall"] for s in scores], color="tab:red", marker=".", label="recall")
            twin.set_ylim(0, 1.05)
            if col == 0:
                ax.set_ylabel("FD")
            if col == len(DISTURBANCES) - 1:
                twin.set_ylabel("precision, recall")
                twin.legend(fontsize=7, loc="center right")
    credit(fig)
    fig.tight_layout()
    fig.savefig(out / "disturbances.png")
    # the pictures show the default model's own sprites: the real ones may not go into the repository
    examples = spritediff.sample(spritediff.load(), "ddim", 20, n=4, context=torch.eye(5)[:4], seed=0,
                                 frames=False).images
    cells = [disturb(examples, level, 1)[i] for disturb in DISTURBANCES.values() for i in range(4) for level in LEVELS]
    grid_image(np.stack(cells), nrow=4 * len(LEVELS), scale=3).save(out / "disturbance_examples.png")
    summary = {p: {n: {"fd": [round(s["fd"], 4) for s in v], "precision": [round(s["precision"], 3) for s in v],
                       "recall": [round(s["recall"], 3) for s in v], "fd_rises": rises([s["fd"] for s in v])}
                   for n, v in by_name.items()} for p, by_name in curves.items()}
    return {"levels": list(LEVELS), "curves": summary, "halves": [int(half_a.sum()), int(half_b.sum())]}


def sample_model(path, contexts, n: int, seed: int = 0) -> np.ndarray:
    model = spritediff.load(path)
    return spritediff.sample(model, "ddim", 20, n=n, context=contexts, guidance=0.0, seed=seed,
                             batch_size=256, frames=False, precision="fp32").images  # the metric's own checks: exact


def snapshot_files(run: Path) -> list[tuple[str, int, Path]]:
    """(weights kind, step, path) of each snapshot beside the run's model file, then the final model."""
    found = []
    for path in run.parent.glob(f"{run.stem}-step*.safetensors"):
        match = re.fullmatch(rf"{re.escape(run.stem)}-step(\d+)(-raw)?", path.stem)
        if match:
            found.append(("raw" if match.group(2) else "EMA", int(match.group(1)), path))
    final = spritediff.load(run).info.get("steps_done")
    return sorted(found, key=lambda f: (f[0], f[1])) + [("EMA", final, run)]


def checkpoint_section(run: Path, quality: SpriteQuality, contexts, n: int, out: Path) -> dict:
    rows, grids = [], []
    for kind, step, path in snapshot_files(run):
        if any(r["weights"] == kind and r["step"] == step for r in rows):
            continue  # the final model is the last snapshot
        images = sample_model(path, contexts, n)
        scores = quality.score(images)
        rows.append({"weights": kind, "step": step, "file": path.name,
                     **{k: round(scores[k], 4) for k in ("fd", "kid", "precision", "recall")}})
        grids.append((f"{kind} {step}", images[:16]))
        print(rows[-1], flush=True)
    checkpoint_plot(rows, out / "checkpoints.png")
    labelled_rows(grids, out / "checkpoint_grids.png")
    return {"rows": rows}


def spaced_ticks(steps: list[int], ratio: float = 1.6) -> list[int]:
    """The steps to label on a log axis: each at least `ratio` times the last labelled one, the last always."""
    ticks = [steps[0]]
    for step in steps[1:]:
        if step >= ratio * ticks[-1]:
            ticks.append(step)
    if ticks[-1] != steps[-1]:
        ticks[-1] = steps[-1]
    return ticks


def checkpoint_plot(rows: list[dict], path: Path) -> None:
    """FD, precision and recall against the training step, EMA and raw weights (rows of checkpoints.json)."""
    fig, axes = figure(1, len(METRICS))
    for ax, metric in zip(axes[0], METRICS):
        for kind in ("EMA", "raw"):
            points = sorted((r["step"], r[metric]) for r in rows if r["weights"] == kind)
            if points:
                ax.plot(*zip(*points), marker="o", label=f"{kind} weights")
        ax.set_xscale("log")
        ticks = spaced_ticks(sorted({r["step"] for r in rows}))
        ax.set_xticks(ticks, [f"{step:,}" for step in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training step")
        ax.set_title(metric + (" (lower is better)" if metric == "fd" else " (higher is better)"))
        if metric == "fd":
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    credit(fig)
    fig.tight_layout()
    fig.savefig(path)


def labelled_rows(grids: list[tuple[str, np.ndarray]], path: Path, scale: int = 3) -> None:
    """One row of sprites per (label, (K,H,W,C) uint8) pair, the label at the left (matplotlib)."""
    fig, axes = figure(len(grids), 1, size=(10, 0.75))
    for ax, (label, images) in zip(axes[:, 0], grids):
        ax.imshow(tile(images, nrow=len(images)), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    credit(fig)
    fig.tight_layout()
    fig.savefig(path)


def compare_section(paths: list[Path], quality: SpriteQuality, contexts, n: int, out: Path) -> dict:
    rows, grids = [], []
    for path in paths:
        model = spritediff.load(path)
        for seed in (0, 1):
            images = sample_model(path, contexts, n, seed)
            scores = quality.score(images)
            rows.append({"model": path.name, "n_feat": model.net.n_feat, "steps": model.info.get("steps_done"),
                         "seed": seed, **{k: round(scores[k], 4) for k in ("fd", "kid", "precision", "recall")}})
            print(rows[-1], flush=True)
            if seed == 0:
                grids.append((path.name, images[:16]))
    labelled_rows(grids, out / "compare_grids.png")
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--run", type=Path, help="model file of a training run made with --snapshots")
    parser.add_argument("--compare", type=Path, nargs="+", help="model files to compare")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--skip-disturbances", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    features = load_features()
    real, labels = np.load(args.data), np.load(args.labels)
    record = {"n": args.n, "sampler": "ddim:20, guidance 0, contexts drawn from the real labels",
              "feature_net": features.net.config(), "credit": spritediff.CREDIT}
    if not args.skip_disturbances:
        record["disturbances"] = disturbance_section(features, real, args.out)
        (args.out / "disturbances.json").write_text(json.dumps(record, indent=1) + "\n")
    quality = SpriteQuality(features, real, kid_subsets=20)
    contexts = label_rows(torch.from_numpy(labels), sample_generators(0, args.n, stream=1))
    if args.run:
        record["checkpoints"] = checkpoint_section(args.run, quality, contexts, args.n, args.out)
        (args.out / "checkpoints.json").write_text(json.dumps(record["checkpoints"], indent=1) + "\n")
    if args.compare:
        record["compare"] = compare_section(args.compare, quality, contexts, args.n, args.out)
        (args.out / "compare.json").write_text(json.dumps(record["compare"], indent=1) + "\n")


if __name__ == "__main__":
    main()
