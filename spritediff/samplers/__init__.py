"""Samplers: one short function each over (eps_fn, x_T, schedule, steps=..., ...), and the registry.

Every sampler takes eps_fn(x (B,C,H,W), t LongTensor (B,)) -> eps, the starting noise x_T, a
Schedule, `steps` (model calls), `spacing`, `generator`, `callback(StepInfo)` and `timesteps` (a grid of the
caller's, decreasing from <= T to 0, instead of steps and spacing: common.sampler_grid); it returns the
sample at t = 0.
"""
from . import ddim, ddpm, dpmpp, karras, plms, unipc
from .common import Option, StepInfo
from .ddim import sample_ddim
from .ddpm import sample_ddpm
from .dpmpp import sample_dpmpp_2m, sample_dpmpp_3m
from .karras import sample_euler, sample_heun
from .plms import sample_plms
from .unipc import sample_unipc

SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-3m": sample_dpmpp_3m,
    "unipc": sample_unipc,
    "euler": sample_euler,
    "heun": sample_heun,
    "plms": sample_plms,
}

DEFAULT_STEPS = {  # samplers missing here default to T steps
    "ddim": 20,
    "dpmpp-2m": 10,
    "dpmpp-3m": 10,
    "unipc": 10,
    "euler": 10,
    "heun": 10,
    "plms": 10,
}

OPTIONS = {  # each sampler's own keyword options, declared once (name -> Option); shared by CLI, specs, API
    "ddpm": ddpm.OPTIONS,
    "ddim": ddim.OPTIONS,
    "dpmpp-2m": dpmpp.OPTIONS,
    "dpmpp-3m": dpmpp.OPTIONS,
    "unipc": unipc.OPTIONS,
    "euler": karras.OPTIONS,
    "heun": karras.OPTIONS,
    "plms": plms.OPTIONS,
}

__all__ = ["SAMPLERS", "DEFAULT_STEPS", "OPTIONS", "Option", "StepInfo"]
