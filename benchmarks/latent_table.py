"""Reconstruction error of DDIM inversion and of exact (BDIA) inversion against steps S, on real sprites.

    python benchmarks/latent_table.py --data ../shared/data/sprites/sprites_base1788_16x16.npy \
        --labels ../shared/data/sprites/sprite_labels_base1788.npy --n 32 --fp64-n 4 --out docs/eval/latent

Encodes n real sprites (a fixed random subset, --seed) to x_T with S steps and decodes them with S steps,
context from the labels (--context auto), guidance 0. Error: mean squared error per pixel on the [0, 1]
scale between the input and the float reconstruction (the DDIM paper's Table 2 measure), averaged over the
images. exact is also run in float64 on the first --fp64-n images of the subset. Prints a markdown table
and writes OUT/table.json (also the mean norm of the latents x_T; sqrt(768) = 27.7 for N(0, I) draws). Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import spritediff
from spritediff.data import base_set

# Song, Meng and Ermon, "Denoising Diffusion Implicit Models", ICLR 2021, Table 2: reconstruction error
# (per-dimension MSE, [0, 1] scale) with DDIM on the CIFAR-10 test set, T = 1000, S steps each way.
PAPER_CIFAR10 = {10: 0.014, 20: 0.0065, 50: 0.0023, 100: 0.0009, 200: 0.0004, 500: 0.0001, 1000: 0.0001}
GOAL_EXACT = {"float32": 1e-5, "float64": 1e-8}


def subset(data: Path, labels: Path | None, n: int, seed: int):
    """n sprites of the base set (course files are de-tiled), their labels or None, and their indices."""
    images = np.load(data, allow_pickle=False)
    tags = np.load(labels, allow_pickle=False) if labels else None
    images, tags = base_set(images, tags)
    index = np.sort(np.random.default_rng(seed).choice(len(images), min(n, len(images)), replace=False))
    return images[index], None if tags is None else tags[index].astype(np.float32), index


def measure(model, images, labels, steps: int, method: str, dtype: torch.dtype) -> dict:
    result = spritediff.invert(model, images, steps, method, context="auto", labels=labels, dtype=dtype,
                               batch_size=len(images))
    return {"mse_mean": float(result.errors.mean()), "mse_max": float(result.errors.max()),
            "latent_norm_mean": float(result.latents.flatten(1).norm(dim=1).mean()),
            "nfe": result.nfe, "seconds": round(result.seconds, 2)}


def row(model, images, labels, steps: int, fp64_n: int) -> dict:
    out = {"steps": steps, "ddim": measure(model, images, labels, steps, "ddim", torch.float32),
           "exact_fp32": measure(model, images, labels, steps, "exact", torch.float32)}
    if fp64_n:
        small = None if labels is None else labels[:fp64_n]
        out["exact_fp64"] = measure(model, images[:fp64_n], small, steps, "exact", torch.float64)
    paper = PAPER_CIFAR10.get(steps)
    out["paper_cifar10"] = paper
    out["goals"] = {"ddim_at_most_paper": None if paper is None else out["ddim"]["mse_mean"] <= paper,
                    "exact_fp32": out["exact_fp32"]["mse_max"] <= GOAL_EXACT["float32"],
                    "exact_fp64": None if not fp64_n else out["exact_fp64"]["mse_max"] <= GOAL_EXACT["float64"]}
    return out


def markdown(rows: list[dict], n: int, fp64_n: int) -> str:
    lines = [f"| S | ddim (fp32, n={n}) | DDIM paper, CIFAR-10 | exact (fp32, n={n}), mean / max | "
             f"exact (fp64, n={fp64_n}), mean / max |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        paper = "" if r["paper_cifar10"] is None else f"{r['paper_cifar10']:g}"
        e32, e64 = r["exact_fp32"], r.get("exact_fp64")
        fp64 = "" if e64 is None else f"{e64['mse_mean']:.1e} / {e64['mse_max']:.1e}"
        lines.append(f"| {r['steps']} | {r['ddim']['mse_mean']:.2g} | {paper} | "
                     f"{e32['mse_mean']:.1e} / {e32['mse_max']:.1e} | {fp64} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--data", type=Path, required=True, help="(N,16,16,3) uint8 sprites .npy")
    parser.add_argument("--labels", type=Path, help="(N,K) labels .npy, for the context of each sprite")
    parser.add_argument("--n", type=int, default=32, help="sprites in the subset (default 32)")
    parser.add_argument("--fp64-n", type=int, default=4, help="sprites for the float64 exact run (default 4; 0: skip)")
    parser.add_argument("--steps", default="10,20,50,100,500", help="step counts S (default 10,20,50,100,500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (default 0)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, required=True, help="folder for table.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = spritediff.load(args.model)
    images, labels, index = subset(args.data, args.labels, args.n, args.seed)
    start = time.perf_counter()
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        rows.append(row(model, images, labels, steps, args.fp64_n))
        print(f"S={steps}: ddim {rows[-1]['ddim']['mse_mean']:.3g}, exact fp32 {rows[-1]['exact_fp32']['mse_max']:.3g}",
              file=sys.stderr)
    table = markdown(rows, len(images), min(args.fp64_n, len(images)))
    record = {"command": " ".join(["python", *sys.argv]), "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "model": args.model or "default", "model_info": model.info,
              "schedule": model.schedule.to_config(), "n": len(images), "fp64_n": min(args.fp64_n, len(images)),
              "indices": index.tolist(), "context": "auto (labels)" if labels is not None else "none",
              "error": "MSE per pixel, [0, 1] scale, input vs float reconstruction, mean over images",
              "paper_cifar10": "Song, Meng and Ermon, ICLR 2021, Table 2 (T = 1000)", "rows": rows,
              "seconds": round(time.perf_counter() - start, 1), "markdown": table,
              "credit": spritediff.CREDIT}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(record, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
