"""Samplers: one short function each over (eps_fn, x_T, schedule, steps=..., ...), and the registry.

Every sampler takes eps_fn(x (B,C,H,W), t LongTensor (B,)) -> eps, the starting noise x_T, a
Schedule, `steps` (model calls), `spacing`, `generator` and `callback(StepInfo)`; it returns the
sample at t = 0.
"""
from .common import StepInfo
from .ddim import sample_ddim
from .ddpm import sample_ddpm

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
}

DEFAULT_STEPS = {"ddim": 20}  # samplers missing here default to T steps

__all__ = ["SAMPLERS", "DEFAULT_STEPS", "StepInfo"]
