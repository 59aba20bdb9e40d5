"""Samplers: one short function each over (eps_fn, x_T, schedule, steps=..., ...), and the registry.

Every sampler takes eps_fn(x (B,C,H,W), t LongTensor (B,)) -> eps, the starting noise x_T, a
Schedule, `steps` (model calls), `spacing`, `generator`, `callback(StepInfo)` and `timesteps` (a grid of the
caller's, decreasing from <= T to 0, instead of steps and spacing: common.sampler_grid); it returns the
sample at t = 0.

REGISTRY (registry.py) holds one SamplerEntry(fn, default_steps, options) per sampler and imports no torch;
SAMPLERS (name -> function, the stable low-level API) and StepInfo load the sampler modules on first use.
"""
from .registry import REGISTRY, SamplerEntry

__all__ = ["REGISTRY", "SamplerEntry", "SAMPLERS", "StepInfo"]


def __getattr__(name: str):
    if name == "SAMPLERS":
        samplers = {key: entry.fn for key, entry in REGISTRY.items()}
        globals()["SAMPLERS"] = samplers
        return samplers
    if name == "StepInfo":
        from .common import StepInfo

        return StepInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
