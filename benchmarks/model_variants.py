"""Variants of one trained model that isolate a post-training cause of quality: weights rounded to fp16 (as
models are stored), BatchNorm statistics measured on the net itself (spritediff.batchnorm), BatchNorm statistics
copied from the live (raw) net of the same step (livebn, with --raw: what the GPU course recipe stores), a
constant added to every predicted eps (eps0.015: the output convolution's bias raised), or several joined by '+'.

    python benchmarks/model_variants.py --model M --data sprites.npy --labels labels.npy --out DIR \
        [--variants fp16,bn,fp16+bn] [--batches 100]

Writes DIR/<variant>.safetensors in float32, to score with `spritediff eval --model DIR/<variant>.safetensors`.
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
import copy
from pathlib import Path

import torch

from spritediff.batchnorm import recalibrate
from spritediff.checkpoint import load_model, save_model
from spritediff.data import load_data
from spritediff.train import copy_live_statistics


def variant(model, name: str, data, batches: int, raw=None):
    """A deep copy of model with the changes named in name ('fp16', 'bn', joined by '+')."""
    model = copy.deepcopy(model)
    for change in name.split("+"):
        if change == "fp16":
            with torch.no_grad():
                for p in model.net.state_dict().values():
                    if p.is_floating_point():
                        p.copy_(p.half().float())
        elif change == "bn":
            labels = None if data.labels is None else data.labels.float()
            recalibrate(model.net, data.images, labels, model.schedule.alphas_cumprod.float(), model.schedule.T,
                        batches=batches)
        elif change == "livebn":
            copy_live_statistics(raw.net, model.net)
        elif change.startswith("eps"):
            with torch.no_grad():
                model.net.out[3].bias += float(change[3:])  # the last layer: eps_hat + delta, everywhere
        else:
            raise SystemExit(f"unknown change {change!r}: fp16, bn, livebn or eps<delta>")
    model.info = {**model.info, "variant": name}
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels")
    parser.add_argument("--variants", default="fp16,bn,fp16+bn")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--raw", help="the raw (live) weights of the same step, for livebn")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, data = load_model(args.model), load_data(args.data, args.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.variants.split(","):
        path = args.out / f"{name}.safetensors"
        save_model(variant(model, name, data, args.batches, args.raw and load_model(args.raw)), path)
        print(f"-> {path}")


if __name__ == "__main__":
    main()
