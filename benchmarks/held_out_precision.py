"""Precision and recall against half the real sprites, with the other half as a sampler that draws the data itself.

    python benchmarks/held_out_precision.py --data sprites_base1788_16x16.npy --labels sprite_labels_base1788.npy \
        default@ddim:20 student.safetensors ...

`eval` scores samples against all the real sprites, so no real sprite can be scored beside them. Here, for each of
three splits (spritediff.evaluate.real_halves, a sprite's mirror images and duplicates in one half), the reference
is one half and the other half's first 512 sprites (shuffled) are scored as if drawn: the precision and recall a
sampler that draws the data itself gets. Each model draws 512 sprites with classes drawn from the real labels and
noise seed split + 1, fp32, at its own guidance (a teacher's default 0.5; a student's is in its weights). The same
feature net and k-NN manifolds as `eval`. Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse

import numpy as np
import torch

import spritediff
from spritediff.evaluate import real_halves
from spritediff.features import load_features
from spritediff.metrics import SpriteQuality
from spritediff.specs import parse_sampler_spec

N = 512


def draw(model, sampler: str, contexts: torch.Tensor, seed: int) -> np.ndarray:
    """(N,H,W,3) uint8 sprites of a model (with sampler SAMPLER:STEPS, "" for a teacher's ddim:20 or a student's
    own) with (N, K) context rows, at the model's own guidance."""
    options = {}
    if model.student is None:
        parsed = parse_sampler_spec(sampler or "ddim:20")
        options = dict(sampler=parsed.name, steps=parsed.steps, **parsed.options)
    return spritediff.sample(model, n=len(contexts), context=contexts, seed=seed, frames=False, precision="fp32",
                             **options).images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("models", nargs="+", help="MODEL[@SAMPLER:STEPS] (a teacher's default: ddim:20)")
    args = p.parse_args()
    real, labels = np.load(args.data), np.load(args.labels)
    features = load_features()
    models = {spec: (spritediff.load(spec.partition("@")[0]), spec.partition("@")[2]) for spec in args.models}
    for split in (0, 1, 2):
        reference, held = real_halves(real, split)
        quality = SpriteQuality(features, real[reference])
        rng = np.random.default_rng(split)
        rows = {"real (the other half)": quality.score(real[held][rng.permutation(int(held.sum()))[:N]])}
        contexts = torch.from_numpy(labels[rng.integers(0, len(labels), N)]).float()
        for spec in args.models:
            rows[spec] = quality.score(draw(*models[spec], contexts, split + 1))
        print(f"split {split} (reference: {int(reference.sum())} sprites)")
        for name, score in rows.items():
            print(f"  {name:50s} FD {score['fd']:.3f}  precision {score['precision']:.3f}  "
                  f"recall {score['recall']:.3f}")


if __name__ == "__main__":
    main()
