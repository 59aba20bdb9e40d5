"""Sampler specs and the checks every public entry makes on its arguments, once, before any work.

A spec is `name[:steps][:key=value]...`; specs are separated by commas: "ddpm:500,ddim:20,ddim:20:eta=1".
Without steps a sampler gets its default (spritediff.samplers.DEFAULT_STEPS, else T). The options a
sampler accepts and their allowed values are declared once, in spritediff.samplers.OPTIONS; the CLI,
the spec strings and spritediff.sample all check values against those declarations.

The check_* functions raise SpriteDiffError with one line that names the argument and what it takes.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, field

from .errors import SpriteDiffError
from .samplers import DEFAULT_STEPS, OPTIONS, SAMPLERS
from .samplers.common import shown

SHARED_ARGUMENTS = ("eps_fn", "x_T", "schedule", "steps", "generator", "callback", "timesteps")  # not OPTIONS
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler name from SAMPLERS, its number of steps (model calls) and its own keyword options."""

    name: str
    steps: int
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """"ddim-20"; options follow, e.g. "ddim-20-eta=1" (unique per spec, safe in file names)."""
        return "-".join([self.name, str(self.steps), *self._option_texts()])

    def __str__(self) -> str:
        """The spec as it would be written: "ddim:20:eta=1"."""
        return ":".join([self.name, str(self.steps), *self._option_texts()])

    def _option_texts(self) -> list[str]:
        return [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.options.items()]


def parse_sampler_specs(text: str, T: int = 500) -> list[SamplerSpec]:
    """Parse "name:steps[:key=value...]" specs separated by commas; T is the model's schedule.T.

    Raises SpriteDiffError (one line) for an unknown sampler, steps that are not an int in 1..T, or
    an option the sampler does not take or rejects.
    """
    parts = [part.strip() for part in (text or "").split(",")]
    if not any(parts):
        raise SpriteDiffError(f"no sampler specs given; write e.g. ddpm:{T},ddim:20")
    if not all(parts):
        raise SpriteDiffError(f"empty sampler spec in {text!r}; separate specs with single commas")
    return [parse_sampler_spec(part, T) for part in parts]


def parse_sampler_spec(text: str, T: int = 500) -> SamplerSpec:
    """One spec, "ddim:20:eta=1"; see parse_sampler_specs."""
    name, steps, options = read_sampler_spec(text, T)
    return SamplerSpec(name, min(DEFAULT_STEPS.get(name, T), T) if steps is None else steps, options)


def read_sampler_spec(text: str, T: int | None = None) -> tuple[str, int | None, dict]:
    """One spec's sampler name, its steps as written (None when it gives none) and its options, parsed and
    checked; steps are checked against T when T is given (before a model is loaded it may not be known)."""
    name, *fields = [f.strip() for f in text.strip().split(":")]
    name = name.lower()
    if name not in SAMPLERS:
        raise SpriteDiffError(f"unknown sampler {name!r} in spec {text!r}; known samplers: {', '.join(SAMPLERS)}")
    steps = None
    if fields and "=" not in fields[0]:
        steps = _parse_steps(fields.pop(0), text, T)
    options = {}
    for item in fields:
        key, value = _parse_option(name, item, text)
        if key in options:
            raise SpriteDiffError(f"option {key!r} given twice in spec {text!r}")
        options[key] = value
    return name, steps, options


def sampler_options(name: str) -> dict:
    """The options of SAMPLERS[name]: {keyword: default}, without the arguments every sampler shares."""
    return {key: option.default for key, option in OPTIONS[name].items()}


def check_sampler(name) -> str:
    """The registered sampler called name (case and surrounding spaces ignored, as in spec strings)."""
    if not isinstance(name, str) or name.strip().lower() not in SAMPLERS:
        raise SpriteDiffError(f"unknown sampler {shown(name)}; choose from {', '.join(SAMPLERS)}")
    return name.strip().lower()


def declared_options(sampler: str, names, where: str = "") -> dict:
    """SAMPLERS[sampler]'s declared OPTIONS, after refusing any of `names` it does not declare."""
    declared = OPTIONS[sampler]
    unknown = sorted(set(names) - set(declared))
    if unknown:
        raise SpriteDiffError(f"{sampler} takes no option {', '.join(unknown)}{where}; "
                              f"its options: {', '.join(declared) or 'none'}")
    return declared


def check_options(sampler: str, options: dict, where: str = "") -> dict:
    """options (keyword -> value) checked against SAMPLERS[sampler]'s declared OPTIONS; values converted."""
    declared = declared_options(sampler, options, where)
    try:
        return {key: declared[key].check(value, key) for key, value in options.items()}
    except ValueError as err:
        raise SpriteDiffError(f"{err}{where}") from None


def _parse_steps(field_text: str, text: str, T: int | None) -> int:
    try:
        steps = int(field_text)
    except ValueError:
        raise SpriteDiffError(f"steps {field_text!r} in spec {text!r} is not an integer") from None
    return steps if T is None else check_steps(steps, T, where=f" in spec {text!r}")


def check_steps(steps: int, T: int, name: str = "steps", where: str = "") -> int:
    """steps (an int) within 1..T, the model's schedule length; `where` ends the message (" in spec ...")."""
    if not 1 <= steps <= T:
        raise SpriteDiffError(f"{name} must be between 1 and T={T}, got {steps}{where}")
    return steps


def check_guidance(value, name: str = "guidance", high: float | None = None) -> float:
    """A classifier-free guidance weight: a finite number >= 0 (and <= high when given)."""
    return check_number(value, name, 0, high)


def _parse_option(name: str, item: str, text: str) -> tuple[str, object]:
    key, equals, value = (s.strip() for s in item.partition("="))
    declared = OPTIONS[name]
    if not equals or not key or not value:
        raise SpriteDiffError(f"bad option {item!r} in spec {text!r}; write key=value, "
                              f"e.g. {name}:20:{next(iter(declared), 'key')}=...")
    if key not in declared:
        choices = ", ".join(declared) or "none"
        raise SpriteDiffError(f"{name} has no option {key!r} (in spec {text!r}); its options: {choices}")
    try:
        return key, declared[key].parse(value, key)
    except ValueError as err:
        raise SpriteDiffError(f"{err} (in spec {text!r})") from None


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """value as an int (a bool or a float such as 2.5 is refused), within [low, high]."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        number = None
    else:
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    if number is None:
        raise SpriteDiffError(f"{name} must be an integer, got {shown(value)}")
    _check_range(number, name, low, high)
    return number


def check_number(value, name: str, low: float | None = None, high: float | None = None) -> float:
    """value as a finite float within [low, high] (nan, inf, bools and strings are refused)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"
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


def _check_range(number, name: str, low, high) -> None:
    if (low is not None and number < low) or (high is not None and number > high):
        got = _text(number)
        if high is None:
            raise SpriteDiffError(f"{name} must be at least 1, got {got}" if low == 1 else
                                  f"{name} must be >= {_text(low)}, got {got}")
        if low is None:
            raise SpriteDiffError(f"{name} must be <= {_text(high)}, got {got}")
        raise SpriteDiffError(f"{name} must be between {_text(low)} and {_text(high)}, got {got}")


def _text(number) -> str:
    """An int exactly, a float briefly (%g)."""
    return str(number) if isinstance(number, int) else f"{number:g}"
