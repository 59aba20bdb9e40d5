"""Euler and Heun in k-diffusion's view (Karras et al. 2022): x_ve = x / sqrt(ab), sigma = sqrt((1 - ab) / ab).

There the probability-flow ODE is d x_ve / d sigma = eps(x, t): the net sees x = x_ve sqrt(ab_t) at the integer
t of the grid, and every step uses that t's exact sigma (the Karras sigmas only choose the t's). Euler in this
view is DDIM exactly; Heun adds the trapezoidal correction (a second model call) on every step but the last,
which goes to sigma = 0 and is x0_hat.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..schedule import Schedule
from .common import EpsFn, Generator, StepInfo, call_eps, sampler_grid


def _eps_ve(eps_fn: EpsFn, x_ve: torch.Tensor, schedule: Schedule, t: int) -> torch.Tensor:
    """eps at integer t for the VE state x_ve (B,C,H,W): the net takes the VP x = x_ve sqrt(ab_t)."""
    return call_eps(eps_fn, x_ve * math.sqrt(schedule.alpha_bar(t)), t)


def sample_euler(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 10, spacing: str = "karras",
                 generator: Generator = None, callback=None, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """Euler over `steps` model calls: x_ve += (sigma_next - sigma) eps. Deterministic: generator is unused.
    timesteps: a grid of the caller's instead of (steps, spacing) (common.sampler_grid).

    x_T: (B,C,H,W) standard normal, the VP state at the grid's first t. Returns x at t = 0.
    """
    ts = sampler_grid(schedule, steps, spacing, timesteps)
    x_ve = x_T / math.sqrt(schedule.alpha_bar(ts[0]))
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        sigma_t = schedule.sigma(t)
        eps = _eps_ve(eps_fn, x_ve, schedule, t)
        if callback is not None:
            callback(StepInfo(i, t, x_ve * math.sqrt(schedule.alpha_bar(t)), x_ve - sigma_t * eps))
        x_ve = x_ve + (schedule.sigma(s) - sigma_t) * eps
    return x_ve


def sample_heun(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 10, spacing: str = "karras",
                generator: Generator = None, callback=None, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """Heun (trapezoidal predictor-corrector) over `steps` steps, 2 steps - 1 model calls: two a step, one on the
    final step to sigma = 0. Deterministic: generator is unused. timesteps: as in sample_euler.

    x_T: (B,C,H,W) standard normal, the VP state at the grid's first t. Returns x at t = 0.
    """
    ts = sampler_grid(schedule, steps, spacing, timesteps)
    x_ve = x_T / math.sqrt(schedule.alpha_bar(ts[0]))
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        sigma_t, sigma_s = schedule.sigma(t), schedule.sigma(s)
        eps = _eps_ve(eps_fn, x_ve, schedule, t)
        if callback is not None:
            callback(StepInfo(i, t, x_ve * math.sqrt(schedule.alpha_bar(t)), x_ve - sigma_t * eps))
        x_euler = x_ve + (sigma_s - sigma_t) * eps
        if s == 0:
            x_ve = x_euler
            continue
        eps_next = _eps_ve(eps_fn, x_euler, schedule, s)
        x_ve = x_ve + (sigma_s - sigma_t) * (eps + eps_next) / 2
    return x_ve
