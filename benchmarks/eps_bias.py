"""What each model's predicted noise does on training sprites, per time step: its mean square (1 for the true noise),
its error against the true noise, and its mean (0 for the true noise; a positive mean darkens every x0 a sampler
predicts, and DDPM's many noisy steps add it up).

    python benchmarks/eps_bias.py --models A.safetensors B.pth ... --data sprites.npy --labels labels.npy \
        [--n 512] [--times 1,10,50,100,200,300,400,450,500]

Every model sees the same sprites, label contexts and noise (seed 0); v- and x0-predicting nets are converted to
eps first (spritediff.denoiser.eps_from_output). Prints one table: per t, "mean square / error / mean" per model.
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse

import torch

import spritediff
from spritediff.data import load_data
from spritediff.denoiser import eps_from_output
from spritediff.pixels import to_model_space
from spritediff.train import noisy


def fixed_batch(data, n: int, seed: int = 0):
    """n training sprites in model space (n,C,H,W), their contexts (n,K) or None, and noise like them."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(len(data.images), (n,), generator=g)
    x0 = to_model_space(data.images[rows])
    contexts = None if data.labels is None else data.labels[rows].float()
    return x0, contexts, torch.randn(x0.shape, generator=g)


@torch.no_grad()
def eps_summary(model, x0, contexts, noise, t: int) -> tuple[float, float, float]:
    """(mean eps_hat^2, mean (eps_hat - noise)^2, mean eps_hat - noise) at time t, over every pixel and sprite."""
    ab = model.schedule.alphas_cumprod[t].float().view(1, 1, 1, 1)
    x_t = noisy(x0, noise, ab)
    out = model.net.eval()(x_t, torch.full((len(x0),), t / model.schedule.T), contexts)
    eps = eps_from_output(out, x_t, ab, model.prediction_type)
    return eps.pow(2).mean().item(), (eps - noise).pow(2).mean().item(), (eps - noise).mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--labels")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--times", default="1,10,50,100,200,300,400,450,500")
    args = p.parse_args()
    data = load_data(args.data, args.labels)
    x0, contexts, noise = fixed_batch(data, args.n)
    models = [spritediff.load(name) for name in args.models]
    print("t    " + "  ".join(f"{name[-24:]:>24s}" for name in args.models))
    for t in (int(v) for v in args.times.split(",")):
        cells = [eps_summary(model, x0, contexts, noise, t) for model in models]
        print(f"{t:<4d} " + "  ".join(f"{sq:6.3f} {err:6.4f} {mean:+.4f}" for sq, err, mean in cells))


if __name__ == "__main__":
    main()
