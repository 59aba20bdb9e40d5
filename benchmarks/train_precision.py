"""Training in bf16 against fp32: the loss curves of two runs that differ only in --precision, side by side.

    for p in fp32 bf16; do OMP_NUM_THREADS=1 spritediff train --data sprites_base1788_16x16.npy \\
        --labels sprite_labels_base1788.npy --out runs/precision_cmp/$p.safetensors --n-feat 32 --steps 3000 \\
        --precision $p --ckpt-every 1000 --seed 0 --no-ema-warmup; done
    python benchmarks/train_precision.py --runs runs/precision_cmp --out docs/eval/train_precision

Reads each run's .log.jsonl, writes loss.png (the loss averaged over windows of 100 steps, both runs) and
losses.json (the mean loss over each 500 steps, and seconds per step). The runs' quality is measured with
`spritediff eval` on their model files (docs/results.md). Same seed: the same data order, t and noise.
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = np.array([r["step"] for r in rows])
    losses = np.array([r["loss"] for r in rows])
    return steps, losses, rows[-1]["seconds"] / rows[-1]["step"]


def window_means(values: np.ndarray, size: int) -> np.ndarray:
    return values[: len(values) // size * size].reshape(-1, size).mean(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    record = {}
    for precision in ("fp32", "bf16"):
        steps, losses, seconds = read_log(args.runs / f"{precision}.log.jsonl")
        smooth = window_means(losses, 100)
        ax.plot(np.arange(len(smooth)) * 100 + 50, smooth, label=precision)
        record[precision] = {"mean_loss_per_500_steps": [round(float(v), 5) for v in window_means(losses, 500)],
                             "seconds_per_step_on_a_shared_machine": round(seconds, 3)}
    ax.set(xlabel="training step", ylabel="loss (mean of 100 steps)", yscale="log",
           title="n_feat 32, batch 100, seed 0: fp32 against bf16 autocast")
    ax.legend()
    fig.text(0.99, 0.01, "Sprites by ElvGames, FrootsnVeggies and kyrise", ha="right", fontsize=6, color="grey")
    fig.tight_layout()
    fig.savefig(args.out / "loss.png", dpi=120)
    (args.out / "losses.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
