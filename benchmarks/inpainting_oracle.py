"""Does RePaint's resampling help inpainting? Measured on the Gaussian-mixture oracle, whose exact conditional
p(hole | known pixels) is known in closed form.

    python benchmarks/inpainting_oracle.py

The oracle of tests/oracle.py with s = 0.2: three components in a 2x2 image. The known pixels are the bottom
row of component k's mean; the hole is the top row. Exact answer: a mixture of the components' top rows
with posterior weights pi_k ∝ w_k N(known; mu_k, s^2). Each inpainting run fills 4000 holes; each fill is
assigned to the component whose top-row mean is nearest, and so are 4000 draws from the exact conditional.
Printed: the total-variation distance between the two assignment frequencies (0 = right proportions).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracle import GaussianMixture  # noqa: E402

from spritediff.latent import inpaint_ddim  # noqa: E402
from spritediff.schedule import Schedule  # noqa: E402

RUNS = [(50, 1), (250, 1), (50, 2), (50, 5), (10, 10)]  # (DDIM steps, resamples per step)


def exact_fill(mixture: GaussianMixture, known: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 2) draws of the top row given the bottom row `known` (2,), from the closed-form conditional."""
    means = mixture.means.view(len(mixture.means), 4)
    log_post = mixture.weights.log() - ((known - means[:, 2:]) ** 2).sum(1) / (2 * mixture.std**2)
    k = torch.multinomial(torch.softmax(log_post, 0), n, replacement=True, generator=g)
    return means[k, :2] + mixture.std * torch.randn(n, 2, generator=g, dtype=torch.float64)


def frequencies(fills: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Share of fills (n, 2) nearest each component's top-row mean."""
    nearest = ((fills[:, None, :] - means[None, :, :2]) ** 2).sum(-1).argmin(1)
    return torch.bincount(nearest, minlength=len(means)).double() / len(fills)


def tv_distance(mixture, schedule, component: int, steps: int, resample: int, n: int = 4000) -> float:
    means = mixture.means.view(len(mixture.means), 4)
    known = means[component].view(1, 1, 2, 2).expand(n, 1, 2, 2).contiguous()
    hole = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64).view(1, 1, 2, 2)
    g = torch.Generator().manual_seed(component)
    x_T = torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=g)
    out = inpaint_ddim(mixture.eps_fn(schedule), x_T, schedule, steps, known, hole, generator=g, resample=resample)
    reference = frequencies(exact_fill(mixture, means[component, 2:], n, g), means)
    return float(0.5 * (frequencies(out.view(n, 4)[:, :2], means) - reference).abs().sum())


def main() -> None:
    mixture, schedule = GaussianMixture.small(std=0.2), Schedule.course()
    print("| DDIM steps | resamples R | model calls | TV, known = component 0 | 1 | 2 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for steps, resample in RUNS:
        tv = [tv_distance(mixture, schedule, k, steps, resample) for k in range(3)]
        print(f"| {steps} | {resample} | {steps * resample} | " + " | ".join(f"{v:.3f}" for v in tv) + " |")


if __name__ == "__main__":
    main()
