"""What every sampler shares: the step record handed to callbacks, noise drawing, the x0 view and the grid."""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch

from ..errors import SpriteDiffError
from ..schedule import SPACINGS, Schedule

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


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - ab) eps) / sqrt(ab)."""
    return (x_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


@dataclass(frozen=True)
class Option:
    """A sampler's own keyword argument, declared once: its type, default and allowed values.

    kind: bool, int, float or str. choices: the allowed values, or None. low, high: inclusive bounds of
    a number (None: unbounded on that side); a float must also be finite. The CLI, the spec strings
    ("ddim:20:eta=0.5") and the Python API all check values with `check`, so none runs the sampler to find out.
    """

    kind: type
    default: object
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None

    def allowed(self) -> str:
        """What the option takes, in words: "trailing, leading, ...", "between 0 and 1", "true or false"."""
        if self.choices is not None:
            return ", ".join(str(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        if self.low is not None:
            return f">= {self.low:g}"
        if self.high is not None:
            return f"<= {self.high:g}"
        return "an integer" if self.kind is int else "a finite number"

    def check(self, value, name: str):
        """value as kind (an int for a float option, a numpy scalar as a Python one) if allowed, else ValueError
        with a one-line message naming the option and what it takes."""
        converted = _as_kind(value, self.kind)
        if converted is None or (self.kind is float and not math.isfinite(converted)):
            kind = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[self.kind]
            raise ValueError(f"{name} must be {kind}" + ("" if kind.endswith(self.allowed()) else
                                                         f" ({self.allowed()})") + f", got {shown(value)}")
        if self.choices is not None and converted not in self.choices:
            raise ValueError(f"unknown {name} {shown(value)}; choose from {self.allowed()}")
        if (self.low is not None and converted < self.low) or (self.high is not None and converted > self.high):
            raise ValueError(f"{name} must be {self.allowed()}, got {shown(value)}")
        return converted

    def parse(self, text: str, name: str):
        """The option's value from command-line text ("0.5", "true", "posterior"), checked as `check` does."""
        text = text.strip()
        value: object = text
        if self.kind is bool:
            value = TRUE_WORDS.get(text.lower(), text)
        elif self.kind in (int, float):
            try:
                value = self.kind(text)
            except ValueError:
                pass
        return self.check(value, name)


TRUE_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
              "off": False}


def shown(value) -> str:
    """A short one-line repr of a user's value for an error message (type and shape for arrays and the like)."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (numbers.Number, np.generic)):
        return f"{type(value).__name__} of shape {tuple(shape)}"
    try:
        text = repr(value)
    except Exception:  # a user's object whose repr fails
        text = "\n"
    if "\n" in text:
        return f"a {type(value).__name__} object"
    return text if len(text) <= 60 else text[:57] + "..."


def _as_kind(value, kind: type):
    """value as kind without losing information, or None (a bool is never taken as a number here)."""
    is_bool = isinstance(value, (bool, np.bool_))
    if kind is bool:
        return bool(value) if is_bool else None
    if is_bool:
        return None
    if kind is int:
        try:
            return operator.index(value)
        except TypeError:
            return None
    if kind is float and isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:
            return None
    if kind is float:
        return None
    return value if isinstance(value, str) else None


def sampler_grid(schedule: Schedule, steps: int, spacing: str,
                 timesteps: Sequence[int] | None = None) -> list[int]:
    """The times a sampler visits, decreasing to 0: the built-in schedule.timesteps(steps, spacing), or the
    caller's own grid `timesteps` (checked by check_timesteps; steps and spacing are then unused, and the sampler
    takes len(timesteps) - 1 steps), as diffusers' and k-diffusion's samplers accept one."""
    if timesteps is None:
        return schedule.timesteps(steps, spacing)
    return check_timesteps(timesteps, schedule.T)


def check_timesteps(timesteps, T: int) -> list[int]:
    """timesteps as a list of Python ints if it is a grid: at least 2 strictly decreasing integers (a list, tuple,
    1-D array or tensor), the first <= T, the last 0. Else a one-line SpriteDiffError."""
    if isinstance(timesteps, (str, bytes)) or getattr(timesteps, "ndim", 1) != 1:
        raise SpriteDiffError(f"timesteps must be a list of integers, got {shown(timesteps)}")
    try:
        points = list(timesteps)
    except TypeError:
        raise SpriteDiffError(f"timesteps must be a list of integers, got {shown(timesteps)}") from None
    if len(points) < 2:
        raise SpriteDiffError(f"timesteps needs at least 2 points (a start <= T={T} down to 0), got {len(points)}")
    ts = [_grid_point(value, i) for i, value in enumerate(points)]
    if ts[0] > T:
        raise SpriteDiffError(f"timesteps must start at most at T={T}, got {ts[0]}")
    if ts[-1] != 0:
        raise SpriteDiffError(f"timesteps must end at 0, got {ts[-1]}")
    for i in range(1, len(ts)):
        if ts[i] >= ts[i - 1]:
            raise SpriteDiffError(f"timesteps must be strictly decreasing, got {ts[i - 1]} then {ts[i]} "
                                  f"at index {i}")
    return ts


def _grid_point(value, index: int) -> int:
    """timesteps[index] as a Python int (a bool or a float is refused)."""
    number = None if isinstance(value, (bool, np.bool_)) else _as_kind(value, int)
    if number is None:
        raise SpriteDiffError(f"timesteps[{index}] must be an integer, got {shown(value)}")
    return number


def spacing_option(default: str) -> Option:
    """The `spacing` option every sampler takes, with its own default grid."""
    return Option(str, default, "timestep grid", choices=SPACINGS)
