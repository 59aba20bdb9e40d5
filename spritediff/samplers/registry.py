"""The sampler registry: one SamplerEntry(fn, default_steps, options) per sampler, declared once.

It imports no torch: the CLI builds its --help (sampler names, one flag per option) and checks spec strings
from these declarations alone; `fn` imports the sampler's module on first use. The option declarations live
here rather than beside each function so that this holds; tests/test_bad_input.py checks that every
function's keyword defaults are exactly its declared options'.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from ..checks import Option, spacing_option

VARIANCES = ("course", "posterior")  # ddpm: the course's b_t or the posterior's variance
WARMUPS = ("ab", "heun")  # plms: the first steps by lower-order Adams-Bashforth or one Heun step
VARIANTS = ("bh1", "bh2")  # unipc: B(h) = h or 1 - e^-h


@dataclass(frozen=True)
class SamplerEntry:
    """One sampler: its function, its default number of steps and its own keyword options.

    function: "module:function" inside spritediff.samplers (fn imports it on first use).
    default_steps: model calls without `steps`, or None for every timestep of the model (T).
    options: keyword -> Option, the sampler's own keywords (those beyond the shared leading arguments).
    """

    function: str
    default_steps: int | None
    options: Mapping[str, Option]

    @property
    def fn(self) -> Callable:
        """The sampler function, fn(eps_fn, x_T, schedule, steps=..., spacing=..., generator=..., callback=...,
        timesteps=..., **options)."""
        module, name = self.function.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)

    def steps_for(self, T: int) -> int:
        """The default steps on a model of T timesteps (never more than T)."""
        return T if self.default_steps is None else min(self.default_steps, T)

    def defaults(self) -> dict:
        """{keyword: default} of the sampler's own options."""
        return {key: option.default for key, option in self.options.items()}


def _options(**options: Option) -> Mapping[str, Option]:
    return MappingProxyType(options)


_DPMPP = _options(spacing=spacing_option("logsnr"),
                  lower_order_final=Option(bool, True, "lower the order of the last steps when steps < 15"))
_KARRAS = _options(spacing=spacing_option("karras"))

REGISTRY: Mapping[str, SamplerEntry] = MappingProxyType({
    "ddpm": SamplerEntry("ddpm:sample_ddpm", None, _options(
        variance=Option(str, "course", "noise: the course's b_t or the posterior's", choices=VARIANCES),
        spacing=spacing_option("trailing"))),
    "ddim": SamplerEntry("ddim:sample_ddim", 20, _options(
        eta=Option(float, 0.0, "noise: 0 deterministic, 1 DDPM-like", low=0.0, high=1.0),
        spacing=spacing_option("trailing"))),
    "dpmpp-2m": SamplerEntry("dpmpp:sample_dpmpp_2m", 10, _DPMPP),
    "dpmpp-3m": SamplerEntry("dpmpp:sample_dpmpp_3m", 10, _DPMPP),
    "unipc": SamplerEntry("unipc:sample_unipc", 10, _options(
        order=Option(int, 2, "order of the predictor", choices=(1, 2, 3)),
        spacing=spacing_option("logsnr"),
        variant=Option(str, "bh2", "B(h) = 1 - e^-h (bh2) or h (bh1)", choices=VARIANTS),
        corrector=Option(bool, True, "apply the corrector UniC after each predictor step"),
        lower_order_final=Option(bool, True, "lower the order of the last steps"))),
    "euler": SamplerEntry("karras:sample_euler", 10, _KARRAS),
    "heun": SamplerEntry("karras:sample_heun", 10, _KARRAS),
    "plms": SamplerEntry("plms:sample_plms", 10, _options(
        spacing=spacing_option("logsnr"),
        warmup=Option(str, "ab", "the first steps: Adams-Bashforth of lower order, or one Heun step",
                      choices=WARMUPS))),
})
