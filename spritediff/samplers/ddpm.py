"""DDPM (Ho et al. 2020): the ancestral Markov chain, one model call per kept timestep.

With steps < T it jumps between the same timesteps as DDIM; a jump t -> s is one DDPM step with
alpha = ab_t / ab_s and beta = 1 - alpha, so DDPM and DDIM can be compared at equal model calls
(docs/design.md, section 4.6; its sigma_t is noise_std here: `sigma` is only the VE view's, Schedule.sigma).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..schedule import Schedule
from .common import EpsFn, Generator, StepInfo, call_eps, predict_x0, randn_like, sampler_grid
from .registry import VARIANCES


def ddpm_noise_std(ab_t: float, ab_s: float, variance: str) -> float:
    """Noise scale of the jump t -> s: sqrt(beta) (course) or the posterior's sqrt(beta (1-ab_s)/(1-ab_t))."""
    beta = 1.0 - ab_t / ab_s
    if variance == "course":
        return math.sqrt(beta)
    if variance == "posterior":
        return math.sqrt(beta * (1.0 - ab_s) / (1.0 - ab_t))
    raise ValueError(f"unknown variance {variance!r}; choose from {', '.join(VARIANCES)}")


def sample_ddpm(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int | None = None,
                variance: str = "course", spacing: str = "trailing", generator: Generator = None,
                callback=None, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """Ancestral sampling; steps defaults to T (every timestep). No noise is added at the last step.
    timesteps: a grid of the caller's instead of (steps, spacing) (common.sampler_grid).

    x_T: (B,C,H,W) standard normal. Returns x at t = 0.
    """
    ts = sampler_grid(schedule, schedule.T if steps is None else steps, spacing, timesteps)
    x = x_T
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        ab_t, ab_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        alpha = ab_t / ab_s
        eps = call_eps(eps_fn, x, t)
        if callback is not None:
            callback(StepInfo(i, t, x, predict_x0(x, eps, ab_t)))
        noise_std = ddpm_noise_std(ab_t, ab_s, variance)
        x = (x - eps * (1.0 - alpha) / math.sqrt(1.0 - ab_t)) / math.sqrt(alpha)
        if s > 0:
            x = x + noise_std * randn_like(x, generator)
    return x
