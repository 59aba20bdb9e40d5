"""diffusers' DDIMScheduler driving a spritediff net: the loop most people would write, as a reference.

diffusers is optional (`pip install diffusers`). Its index j is spritediff's t = j + 1, and
trained_betas = [1 - ab_1, b_2, ..., b_T] reproduce spritediff's alphas_cumprod exactly (docs/solvers.md),
so with "trailing" spacing it runs the same DDIM on the same timesteps as spritediff's ddim sampler.
"""
from __future__ import annotations

import torch

from .errors import SpriteDiffError
from .schedule import Schedule


def diffusers_ddim(schedule: Schedule):
    """A diffusers DDIMScheduler equal to spritediff's schedule; a user error if diffusers is missing."""
    try:
        from diffusers import DDIMScheduler
    except ImportError:
        raise SpriteDiffError("the diffusers reference needs diffusers: pip install diffusers") from None
    ab = schedule.alphas_cumprod
    betas = torch.cat([1 - ab[1:2], schedule.betas[2:]]).float()
    return DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=betas.numpy(), clip_sample=False,
                         set_alpha_to_one=True, timestep_spacing="trailing")


def diffusers_ddim_loop(scheduler, eps_fn, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """x0 (B,C,H,W) from x_T by scheduler.step over `steps` timesteps, eps_fn(x, t) with spritediff's t."""
    scheduler.set_timesteps(steps)
    x = x_T
    for j in scheduler.timesteps:
        t = torch.full((len(x),), int(j) + 1, device=x.device)
        x = scheduler.step(eps_fn(x, t), j, x).prev_sample
    return x
