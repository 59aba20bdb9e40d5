"""SDEdit (Meng et al. 2022) and inpainting over any eps function: noise an image to t0, denoise from there.

SDEdit: x_t0 = sqrt(ab_t0) x + sqrt(1 - ab_t0) z, then any sampler from t0 down to 0 on the schedule cut
at t0. At t0 = T the start is the samplers' own, pure noise x_T = z, so strength 1 is plain sampling.
Inpainting: a DDIM loop that after each move puts back the known pixels, noised to the current time.
"""
from __future__ import annotations

import math

import torch

from ..samplers.common import EpsFn, Generator, StepInfo, call_eps, predict_x0, randn_like
from ..schedule import Schedule
from .inversion import ddim_move


def truncated_schedule(schedule: Schedule, t0: int) -> Schedule:
    """The schedule over t = 0..t0 (same alpha_bar values), so that any sampler's grid ends its first step at t0."""
    return Schedule(schedule.betas[:t0 + 1], schedule.alphas_cumprod[:t0 + 1], schedule.beta_start, schedule.beta_end,
                    schedule.terminal_snr)


def noise_to(x0: torch.Tensor, noise: torch.Tensor, schedule: Schedule, t0: int) -> torch.Tensor:
    """x at time t0 from clean x0 and standard normal noise, both (B,C,H,W); pure noise at t0 = T, x0 at 0."""
    if t0 >= schedule.T:
        return noise
    ab = schedule.alpha_bar(t0)
    return math.sqrt(ab) * x0 + math.sqrt(1.0 - ab) * noise


def inpaint_ddim(eps_fn: EpsFn, x_t0: torch.Tensor, schedule: Schedule, steps: int, known: torch.Tensor,
                 mask: torch.Tensor, generator: Generator = None, callback=None, resample: int = 1) -> torch.Tensor:
    """DDIM from x_t0 at t0 = schedule.T down to 0, keeping the known pixels.

    known: (B,C,H,W) the clean image; mask: (B or 1,1,H,W), 1 where the model fills in, 0 where known is kept.
    After each move to s, the kept pixels are replaced by sqrt(ab_s) known + sqrt(1 - ab_s) z (fresh z from
    generator); at s = 0 they equal known exactly. resample R > 1: RePaint (Lugmayr et al. 2022) with jumps
    of one step: R - 1 times, noise the joined x_s back to t and redo the step. Returns (B,C,H,W).
    """
    ts = schedule.timesteps(steps, "trailing")
    x = x_t0
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        for r in range(resample):
            x_s = join_step(eps_fn, x, t, s, schedule, known, mask, generator, callback if r == 0 else None, i)
            x = x_s if r == resample - 1 else renoise(x_s, schedule.alpha_bar(s), schedule.alpha_bar(t), generator)
    return x


def join_step(eps_fn: EpsFn, x: torch.Tensor, t: int, s: int, schedule: Schedule, known: torch.Tensor,
              mask: torch.Tensor, generator: Generator, callback, index: int) -> torch.Tensor:
    """One DDIM move t -> s of x, then the known pixels noised to s put back outside the mask."""
    ab_t, ab_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
    eps = call_eps(eps_fn, x, t)
    if callback is not None:
        callback(StepInfo(index, t, x, predict_x0(x, eps, ab_t)))
    moved = ddim_move(x, eps, ab_t, ab_s)
    kept = known if s == 0 else math.sqrt(ab_s) * known + math.sqrt(1.0 - ab_s) * randn_like(known, generator)
    return torch.where(mask > 0.5, moved, kept)


def renoise(x_s: torch.Tensor, ab_s: float, ab_t: float, generator: Generator) -> torch.Tensor:
    """The forward process from s back up to t > s: sqrt(ab_t / ab_s) x_s + sqrt(1 - ab_t / ab_s) z."""
    ratio = ab_t / ab_s
    return math.sqrt(ratio) * x_s + math.sqrt(1.0 - ratio) * randn_like(x_s, generator)
