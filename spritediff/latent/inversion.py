"""Inversion: DDIM run from t = 0 up to T (approximate) and BDIA-DDIM (exact), over any eps function.

Grid: the sampler's timesteps t_0 = T > t_1 > ... > t_S = 0 for S steps (Schedule.timesteps).
DDIM inversion takes eps at the current point, x_s = sqrt(ab_s) x0_hat(x_t) + sqrt(1 - ab_s) eps_hat(x_t)
for s > t, so its error shrinks with S (first order). BDIA (Zhang, Lewis and Kleijn 2023) with gamma = 1
decodes with the two-step update

    x_{k+1} = x_{k-1} - D(x_k; t_k -> t_{k-1}) + D(x_k; t_k -> t_{k+1}),   D: a DDIM move with eps_hat(x_k, t_k),

which is solved for x_{k-1} in closed form, so encoding and decoding are exact inverses up to float
rounding, at any S. Its latent is the pair (x at t_0, x at t_1); decoding from x_T alone takes a plain
DDIM step to t_1 first.
"""
from __future__ import annotations

import math

import torch

from ..samplers.common import EpsFn, StepInfo, call_eps, predict_x0
from ..schedule import Schedule


def ddim_move(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_s: float) -> torch.Tensor:
    """The deterministic DDIM move from time t to s (either direction) with a given eps_hat at x_t.

    x_t, eps: (B,C,H,W); ab_t, ab_s: alpha_bar at t and s. Returns sqrt(ab_s) x0_hat + sqrt(1 - ab_s) eps.
    """
    return math.sqrt(ab_s) * predict_x0(x_t, eps, ab_t) + math.sqrt(1.0 - ab_s) * eps


def _eps(eps_fn: EpsFn, x: torch.Tensor, t: int, ab_t: float, index: int, callback) -> torch.Tensor:
    eps = call_eps(eps_fn, x, t)
    if callback is not None:
        callback(StepInfo(index, t, x, predict_x0(x, eps, ab_t)))
    return eps


def invert_ddim(eps_fn: EpsFn, x0: torch.Tensor, schedule: Schedule, steps: int = 20, spacing: str = "trailing",
                callback=None) -> torch.Tensor:
    """DDIM inversion: x0 (B,C,H,W) at t = 0 -> x_T, S = steps model calls (the first at t = 0)."""
    ts = schedule.timesteps(steps, spacing)[::-1]  # increasing: 0, ..., T
    x = x0
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        ab_t = schedule.alpha_bar(t)
        x = ddim_move(x, _eps(eps_fn, x, t, ab_t, i, callback), ab_t, schedule.alpha_bar(s))
    return x


def bdia_step(eps_fn: EpsFn, x_far: torch.Tensor, x_mid: torch.Tensor, t_far: int, t_mid: int, t_near: int,
              schedule: Schedule, index: int = 0, callback=None) -> torch.Tensor:
    """One BDIA move over two grid cells: x_near = x_far - D(x_mid; t_mid -> t_far) + D(x_mid; t_mid -> t_near).

    The same function both decodes (t_far > t_mid > t_near) and encodes (t_far < t_mid < t_near): the update
    is its own inverse with the roles of far and near swapped. One model call, at (x_mid, t_mid).
    """
    ab_mid = schedule.alpha_bar(t_mid)
    eps = _eps(eps_fn, x_mid, t_mid, ab_mid, index, callback)
    back = ddim_move(x_mid, eps, ab_mid, schedule.alpha_bar(t_far))
    ahead = ddim_move(x_mid, eps, ab_mid, schedule.alpha_bar(t_near))
    return x_far - back + ahead


def sample_bdia(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 20, spacing: str = "trailing",
                x_t1: torch.Tensor | None = None, generator=None, callback=None) -> torch.Tensor:
    """BDIA-DDIM decoding from x_T (B,C,H,W) to t = 0; same arguments as the samplers, plus x_t1.

    x_t1: the latent's second state, at t_1 (from invert_bdia); None: a plain DDIM step from x_T (a sampler
    from noise). S - 1 model calls with x_t1, S without. generator is unused (deterministic).
    """
    ts = schedule.timesteps(steps, spacing)
    if x_t1 is None:
        ab_T = schedule.alpha_bar(ts[0])
        x_t1 = ddim_move(x_T, _eps(eps_fn, x_T, ts[0], ab_T, 0, callback), ab_T, schedule.alpha_bar(ts[1]))
    x_far, x_mid = x_T, x_t1
    for k in range(1, len(ts) - 1):
        x_far, x_mid = x_mid, bdia_step(eps_fn, x_far, x_mid, ts[k - 1], ts[k], ts[k + 1], schedule, k, callback)
    return x_mid


def invert_bdia(eps_fn: EpsFn, x0: torch.Tensor, schedule: Schedule, steps: int = 20, spacing: str = "trailing",
                x_near: torch.Tensor | None = None, callback=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inversion: x0 (B,C,H,W) -> the latent pair (x_T, x_t1), each (B,C,H,W).

    x_near: the state at t_{S-1} if known (the last-but-one state of a BDIA decoding); None: one DDIM
    inversion step from x0 (eps at t = 0) gives it. sample_bdia(..., x_T, x_t1=x_t1) returns x0 to float
    rounding. S - 1 model calls with x_near, S without.
    """
    ts = schedule.timesteps(steps, spacing)
    S = len(ts) - 1
    if x_near is None:
        x_near = ddim_move(x0, _eps(eps_fn, x0, 0, 1.0, 0, callback), 1.0, schedule.alpha_bar(ts[S - 1]))
    x_after, x_mid = x0, x_near
    for k in range(S - 1, 0, -1):
        x_after, x_mid = x_mid, bdia_step(eps_fn, x_after, x_mid, ts[k + 1], ts[k], ts[k - 1], schedule, S - k,
                                          callback)
    return x_mid, x_after
