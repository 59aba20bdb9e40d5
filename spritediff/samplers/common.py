"""What every sampler shares: the step record handed to callbacks, noise drawing, the x0 view and the grid."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from ..checks import timestep_grid
from ..schedule import Schedule

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generator = Union[None, torch.Generator, Sequence[torch.Generator]]


@dataclass
class StepInfo:
    """One sampler step. x_t and x0_hat are (B,C,H,W); t is the integer time the model was called at."""

    index: int
    t: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor


def randn_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Standard normal noise shaped like x (B,...).

    generator: None (global RNG), one torch.Generator for the whole batch, or a sequence of B CPU
    generators, one stream per sample, so that sample i's noise does not depend on the batch.
    """
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
    draws = [torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generator]
    return torch.stack(draws).to(x.device)


def call_eps(eps_fn: EpsFn, x: torch.Tensor, t: int) -> torch.Tensor:
    """eps_fn at one integer time for the whole batch."""
    return eps_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: float | torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - ab) eps) / sqrt(ab); alpha_bar one float, or a tensor broadcastable to x_t
    (B,C,H,W), e.g. (B,1,1,1) for a time per sample."""
    if isinstance(alpha_bar, torch.Tensor):
        return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
    return (x_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def sampler_grid(schedule: Schedule, steps: int, spacing: str,
                 timesteps: Sequence[int] | None = None) -> list[int]:
    """The times a sampler visits, decreasing to 0: the built-in schedule.timesteps(steps, spacing), or the
    caller's own grid `timesteps` (checked by checks.timestep_grid; steps and spacing are then unused, and the sampler
    takes len(timesteps) - 1 steps), as diffusers' and k-diffusion's samplers accept one."""
    if timesteps is None:
        return schedule.timesteps(steps, spacing)
    return timestep_grid(timesteps, schedule.T)
