"""PLMS, PNDM's pseudo linear multistep method (Liu et al. 2022): DDIM's transfer step with an Adams-Bashforth
combination of the last four eps instead of eps.

A pseudo numerical method keeps DDIM's nonlinear transfer x_t -> x_s, x_s = sqrt(ab_s) x0_hat(eps') +
sqrt(1 - ab_s) eps', and takes only its noise estimate eps' from a classical method, here linear multistep. The
coefficients are Adams-Bashforth's equal-step ones whatever the grid, as in the paper; as they average eps over a
step in the step index rather than in sigma, PLMS is second order on a grid smooth in the index (logsnr, karras)
and erratic on one that rounding to integer t makes uneven (linspace).

Warm-up (the first three steps have fewer than four eps), the `warmup` option:
  "ab"   (default): Adams-Bashforth of order 1, 2, 3 (eps, (3 e_1 - e_0)/2, (23 e_2 - 16 e_1 + 5 e_0)/12); one model
         call a step. PNDM's Runge-Kutta warm-up (four calls a step) is not offered.
  "heun": the first step is a trapezoidal (Heun) step, one extra model call, as in latent diffusion's PLMS and
         diffusers' PNDMScheduler(skip_prk_steps=True); then orders 2, 3, 4.
The final step to t = 0 is x0_hat (DDIM with the step's own eps).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..schedule import Schedule
from .common import EpsFn, Generator, StepInfo, call_eps, predict_x0, sampler_grid
from .registry import WARMUPS

ADAMS_BASHFORTH = {  # newest eps first
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def transfer(x: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_s: float) -> torch.Tensor:
    """PNDM's transfer from t to s with a noise estimate eps: the deterministic DDIM step."""
    return math.sqrt(ab_s) * predict_x0(x, eps, ab_t) + math.sqrt(1.0 - ab_s) * eps


def sample_plms(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 10, spacing: str = "logsnr",
                warmup: str = "ab", generator: Generator = None, callback=None,
                timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """PLMS over `steps` steps: `steps` model calls, one more with warmup="heun" (if steps > 1). Deterministic.
    timesteps: a grid of the caller's instead of (steps, spacing) (common.sampler_grid).

    x_T: (B,C,H,W) standard normal. Returns x at t = 0, same shape and dtype.
    """
    if warmup not in WARMUPS:
        raise ValueError(f"unknown PLMS warm-up {warmup!r}; choose from {', '.join(WARMUPS)}")
    ts = sampler_grid(schedule, steps, spacing, timesteps)
    x = x_T
    history: list[torch.Tensor] = []  # eps of the earlier steps, newest first
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        ab_t, ab_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
        eps = call_eps(eps_fn, x, t)
        if callback is not None:
            callback(StepInfo(i, t, x, predict_x0(x, eps, ab_t)))
        history = [eps] + history[:3]
        if s == 0:
            x = predict_x0(x, eps, ab_t)
        elif i == 0 and warmup == "heun":
            eps_next = call_eps(eps_fn, transfer(x, eps, ab_t, ab_s), s)
            x = transfer(x, (eps + eps_next) / 2, ab_t, ab_s)
        else:
            eps_prime = sum(c * e for c, e in zip(ADAMS_BASHFORTH[len(history)], history))
            x = transfer(x, eps_prime, ab_t, ab_s)
    return x
