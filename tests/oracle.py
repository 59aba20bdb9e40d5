"""The Gaussian-mixture oracle (docs/design.md): exact eps for p0 = sum_k w_k N(mu_k, s^2 I), and the exact
probability-flow ODE solution to check deterministic samplers against, all in float64."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from spritediff.schedule import Schedule


class GaussianMixture:
    """means: (K, C, H, W); weights: (K,) summing to 1; std: the components' s."""

    def __init__(self, means: torch.Tensor, weights: torch.Tensor, std: float):
        self.means = means.double()
        self.weights = weights.double() / weights.sum()
        self.std = std

    @classmethod
    def small(cls, std: float = 0.3) -> "GaussianMixture":
        """Three components in a (1, 2, 2) image, unequal weights, means inside [-1, 1]."""
        means = torch.tensor([[-0.8, 0.5, 0.2, -0.4], [0.6, -0.7, 0.5, 0.3], [0.1, 0.4, -0.6, 0.7]])
        return cls(means.view(3, 1, 2, 2), torch.tensor([0.5, 0.3, 0.2]), std)

    def eps_from_ab(self, x: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """The optimal eps_hat = (x - sqrt(ab) E[x0|x]) / sqrt(1 - ab) for x (B,C,H,W), ab (B,) float64.

        Written in the VE view y = x / sqrt(ab), sigma^2 = (1 - ab) / ab, where it is free of 0/0 at ab = 1:
        eps_hat = sigma sum_k r_k (y - mu_k) / (s^2 + sigma^2), r_k ∝ w_k exp(-|y - mu_k|^2 / (2 (s^2 + sigma^2))).
        """
        ab = ab.double().view(-1, 1, 1)
        sigma2 = (1 - ab) / ab
        y = x.double().reshape(len(x), 1, -1) / ab.sqrt()  # (B, 1, D)
        diff = y - self.means.reshape(1, len(self.means), -1)  # (B, K, D)
        var = self.std**2 + sigma2  # (B, 1, 1)
        resp = torch.softmax(self.weights.log().view(1, -1) - (diff**2).sum(-1) / (2 * var[:, :, 0]), dim=1)
        eps = sigma2.sqrt()[:, 0] * (resp[:, :, None] * diff).sum(1) / var[:, 0]
        return eps.view_as(x).to(x.dtype)

    def eps_fn(self, schedule: Schedule):
        """eps_fn(x, t) over the schedule's integer timesteps (t >= 1)."""
        table = schedule.alphas_cumprod

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.eps_from_ab(x, table[t.cpu()])

        return eps

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws from p0 (n,C,H,W) and their component indices (n,)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, *self.means.shape[1:]), generator=generator, dtype=torch.float64)
        return self.means[k] + self.std * noise, k

    def ode_solution(self, x_start: torch.Tensor, ab_start: float, ab_end: float = 1.0) -> torch.Tensor:
        """The probability-flow ODE from x_start at alpha_bar ab_start to ab_end, solved to ~1e-11.

        In y = x / sqrt(ab) and sigma = sqrt((1 - ab) / ab) the ODE is dy/dsigma = eps(x, ab).
        """
        shape = x_start.shape

        def rhs(sigma, y):
            ab = 1.0 / (1.0 + sigma**2)
            x = torch.from_numpy(y).view(shape) * math.sqrt(ab)
            return self.eps_from_ab(x, torch.full((shape[0],), ab, dtype=torch.float64)).reshape(-1).numpy()

        sigma_start = math.sqrt((1 - ab_start) / ab_start)
        sigma_end = math.sqrt((1 - ab_end) / ab_end)
        y0 = (x_start.double() / math.sqrt(ab_start)).reshape(-1).numpy()
        sol = solve_ivp(rhs, (sigma_start, sigma_end), y0, method="DOP853", rtol=1e-12, atol=1e-12)
        assert sol.success, sol.message
        return torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).view(shape) * math.sqrt(ab_end)
