"""DDIM (Song et al. 2021): x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - noise_std^2) eps_hat + noise_std z.

noise_std is the paper's sigma_t (docs/design.md, section 4.7); in this package `sigma` is only the VE view's
sqrt((1 - ab) / ab) (Schedule.sigma, samplers/karras.py).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..schedule import Schedule
from .common import EpsFn, Generator, StepInfo, call_eps, predict_x0, randn_like, sampler_grid


def ddim_noise_std(ab_t: float, ab_s: float, eta: float) -> float:
    """noise_std = eta sqrt((1 - ab_s)/(1 - ab_t)) sqrt(1 - ab_t/ab_s) for the jump t -> s."""
    return eta * math.sqrt((1.0 - ab_s) / (1.0 - ab_t)) * math.sqrt(1.0 - ab_t / ab_s)


def sample_ddim(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 20, eta: float = 0.0,
                spacing: str = "trailing", generator: Generator = None, callback=None,
                timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """DDIM over `steps` model calls; eta = 0 is deterministic, eta = 1 matches DDPM's posterior.
    timesteps: a grid of the caller's instead of (steps, spacing) (common.sampler_grid).

    x_T: (B,C,H,W) standard normal. Returns x at t = 0, same shape and dtype.
    """
    if not 0.0 <= eta <= 1.0:  # eta's declared range (registry.py): beyond 1, noise_std can exceed the jump's
        # whole noise budget
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    ts = sampler_grid(schedule, steps, spacing, timesteps)
    x = x_T
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        ab_t, ab_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        eps = call_eps(eps_fn, x, t)
        x0_hat = predict_x0(x, eps, ab_t)
        if callback is not None:
            callback(StepInfo(i, t, x, x0_hat))
        noise_std = ddim_noise_std(ab_t, ab_s, eta) if s > 0 else 0.0
        x = math.sqrt(ab_s) * x0_hat + math.sqrt(max(1.0 - ab_s - noise_std**2, 0.0)) * eps
        if noise_std > 0:
            x = x + noise_std * randn_like(x, generator)
    return x
