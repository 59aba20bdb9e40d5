"""The argument checks every entry point makes, their vocabularies and their error text: one leaf module.

It imports nothing heavy (no torch, no numpy), so `spritediff --help` and argument errors stay instant, and
every layer may import it: the samplers (Option, the spacings), checkpoint and safetensors_io (shown), the
edge (the check_* functions).

Two kinds of failure, one text each:
- `Option.check` / `Option.parse` raise ValueError: they run inside the numerics too (a sampler called through
  the low-level API with eta=2), where a user error type would be wrong;
- the check_* functions raise SpriteDiffError: they run only at the edge (CLI, Python API, server), which shows
  the message as one line. `user_errors()` turns a ValueError raised while checking into that one line.
"""
from __future__ import annotations

import math
import numbers
import operator
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import SpriteDiffError

# The vocabularies users pick from (declared once; the modules that act on them import them from here)
SPACINGS = ("trailing", "leading", "linspace", "quadratic", "logsnr", "karras")  # schedule.Schedule.timesteps
PRECISIONS = ("fp32", "bf16", "auto")  # fast.resolve_precision
PREDICTION_TYPES = ("eps", "x0", "v")  # what a net outputs; docs/design.md, "Prediction types"
NORMS = ("batch", "group")  # ContextUnet's conv-block normalisation: the course's BatchNorm, or GroupNorm
MAX_SEED = 2**63 - 1


def shown(value) -> str:
    """A short one-line repr of a user's value for an error message (type and shape for arrays and the like)."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (numbers.Number, *_numpy_types("generic"))):
        return f"{type(value).__name__} of shape {tuple(shape)}"
    try:
        text = repr(value)
    except Exception:  # a user's object whose repr fails
        text = "\n"
    if "\n" in text:
        return f"a {type(value).__name__} object"
    return text if len(text) <= 60 else text[:57] + "..."


def _numpy_types(*names: str) -> tuple[type, ...]:
    """numpy's types of these names if numpy is loaded (a value cannot be a numpy object otherwise), else ()."""
    numpy = sys.modules.get("numpy")
    return () if numpy is None else tuple(getattr(numpy, name) for name in names)


def _is_bool(value) -> bool:
    return isinstance(value, (bool, *_numpy_types("bool_")))


@contextmanager
def user_errors(where: str = ""):
    """At the edge: a ValueError raised by a declared check inside the block becomes the one-line SpriteDiffError
    (with `where` appended, e.g. " in spec 'ddim:2:eta=9'")."""
    try:
        yield
    except SpriteDiffError:
        raise
    except ValueError as err:
        raise SpriteDiffError(f"{err}{where}") from None


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


def spacing_option(default: str) -> Option:
    """The `spacing` option every sampler takes, with its own default grid."""
    return Option(str, default, "timestep grid", choices=SPACINGS)


def _as_kind(value, kind: type):
    """value as kind without losing information, or None (a bool is never taken as a number here)."""
    is_bool = _is_bool(value)
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


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """value as an int (a bool or a float such as 2.5 is refused), within [low, high]."""
    number = _as_kind(value, int)
    if number is None:
        raise SpriteDiffError(f"{name} must be an integer, got {shown(value)}")
    _check_range(number, name, low, high)
    return number


def check_number(value, name: str, low: float | None = None, high: float | None = None) -> float:
    """value as a finite float within [low, high] (nan, inf, bools and strings are refused)."""
    ok = isinstance(value, numbers.Real) and not _is_bool(value)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise SpriteDiffError(f"{name} must be a finite number, got {shown(value)}")
    _check_range(number, name, low, high)
    return number


def check_seed(value, name: str = "seed") -> int:
    """A seed: an integer in 0..2^63-1."""
    return check_int(value, name, 0, MAX_SEED)


def check_steps(steps: int, T: int, name: str = "steps", where: str = "") -> int:
    """steps (an int) within 1..T, the model's schedule length; `where` ends the message (" in spec ...")."""
    if not 1 <= steps <= T:
        raise SpriteDiffError(f"{name} must be between 1 and T={T}, got {steps}{where}")
    return steps


def check_guidance(value, name: str = "guidance", high: float | None = None) -> float:
    """A classifier-free guidance weight: a finite number >= 0 (and <= high when given)."""
    return check_number(value, name, 0, high)


def check_precision_name(value) -> str:
    """value if it is one of PRECISIONS, else a one-line SpriteDiffError (fast.check_precision also takes dtypes)."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise SpriteDiffError(f"unknown precision {value!r}; use {', '.join(PRECISIONS)}")
    return value


def check_prediction_type(value, where: str = "prediction_type") -> str:
    """value if it is one of PREDICTION_TYPES, else a one-line SpriteDiffError naming `where`."""
    if not isinstance(value, str) or value not in PREDICTION_TYPES:
        raise SpriteDiffError(f"{where} must be one of {', '.join(PREDICTION_TYPES)}, got {shown(value)}")
    return value


def check_timesteps(timesteps, T: int) -> list[int]:
    """At the edge: timestep_grid, its ValueError as the one-line SpriteDiffError."""
    with user_errors():
        return timestep_grid(timesteps, T)


def timestep_grid(timesteps, T: int) -> list[int]:
    """timesteps as a list of Python ints if it is a grid: at least 2 strictly decreasing integers (a list, tuple,
    1-D array or tensor), the first <= T, the last 0. Else a ValueError (the numerics' check; check_timesteps is
    the edge's)."""
    if isinstance(timesteps, (str, bytes)) or getattr(timesteps, "ndim", 1) != 1:
        raise ValueError(f"timesteps must be a list of integers, got {shown(timesteps)}")
    try:
        points = list(timesteps)
    except TypeError:
        raise ValueError(f"timesteps must be a list of integers, got {shown(timesteps)}") from None
    if len(points) < 2:
        raise ValueError(f"timesteps needs at least 2 points (a start <= T={T} down to 0), got {len(points)}")
    ts = [_grid_point(value, i) for i, value in enumerate(points)]
    if ts[0] > T:
        raise ValueError(f"timesteps must start at most at T={T}, got {ts[0]}")
    if ts[-1] != 0:
        raise ValueError(f"timesteps must end at 0, got {ts[-1]}")
    for i in range(1, len(ts)):
        if ts[i] >= ts[i - 1]:
            raise ValueError(f"timesteps must be strictly decreasing, got {ts[i - 1]} then {ts[i]} "
                                  f"at index {i}")
    return ts


def _grid_point(value, index: int) -> int:
    """timesteps[index] as a Python int (a bool or a float is refused)."""
    number = _as_kind(value, int)
    if number is None:
        raise ValueError(f"timesteps[{index}] must be an integer, got {shown(value)}")
    return number


def _check_range(number, name: str, low, high) -> None:
    problem = range_problem(number, low, high)
    if problem is not None:
        raise SpriteDiffError(f"{name} {problem}")


def range_problem(number, low=None, high=None) -> str | None:
    """None if low <= number <= high (a None bound is open), else what is wrong, the one text of every range error:
    "must be at least 1, got 0", "must be between 1 and 16, got 20", "must be >= 0.5, got 0.1"."""
    if (low is None or number >= low) and (high is None or number <= high):
        return None
    got = _text(number)
    if high is None:
        return f"must be at least 1, got {got}" if low == 1 else f"must be >= {_text(low)}, got {got}"
    if low is None:
        return f"must be <= {_text(high)}, got {got}"
    return f"must be between {_text(low)} and {_text(high)}, got {got}"


def _text(number) -> str:
    """An int exactly, a float briefly (%g)."""
    return str(number) if isinstance(number, int) else f"{number:g}"
