"""Sampler specs: "ddpm:500,ddim:20,ddim:20:eta=1" -> a list of SamplerSpec (shared by bench and eval).

One spec is `name[:steps][:key=value]...`; specs are separated by commas. Without steps a sampler
gets its default (spritediff.samplers.DEFAULT_STEPS, else T). The options a sampler accepts are the
keyword arguments of its function in spritediff.samplers.SAMPLERS beyond the shared ones, so new
samplers need no change here; a value is read as the type of that argument's default.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch

from .errors import SpriteDiffError
from .samplers import DEFAULT_STEPS, SAMPLERS
from .schedule import Schedule

SHARED_ARGUMENTS = ("eps_fn", "x_T", "schedule", "steps", "generator", "callback")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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
    name, *fields = [f.strip() for f in text.strip().split(":")]
    name = name.lower()
    if name not in SAMPLERS:
        raise SpriteDiffError(f"unknown sampler {name!r} in spec {text!r}; known samplers: {', '.join(SAMPLERS)}")
    steps = min(DEFAULT_STEPS.get(name, T), T)
    if fields and "=" not in fields[0]:
        steps = _parse_steps(fields.pop(0), text, T)
    options = {}
    for item in fields:
        key, value = _parse_option(name, item, text)
        if key in options:
            raise SpriteDiffError(f"option {key!r} given twice in spec {text!r}")
        options[key] = value
    spec = SamplerSpec(name, steps, options)
    if options:
        _probe(spec, T, text)
    return spec


def sampler_options(name: str) -> dict:
    """The options of SAMPLERS[name]: {keyword: default}, without the arguments every sampler shares."""
    parameters = inspect.signature(SAMPLERS[name]).parameters.values()
    return {p.name: p.default for p in parameters
            if p.name not in SHARED_ARGUMENTS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _parse_steps(field_text: str, text: str, T: int) -> int:
    try:
        steps = int(field_text)
    except ValueError:
        raise SpriteDiffError(f"steps {field_text!r} in spec {text!r} is not an integer") from None
    if not 1 <= steps <= T:
        raise SpriteDiffError(f"steps must be between 1 and T={T}, got {steps} in spec {text!r}")
    return steps


def _parse_option(name: str, item: str, text: str) -> tuple[str, object]:
    key, equals, value = (s.strip() for s in item.partition("="))
    known = sampler_options(name)
    if not equals or not key or not value:
        raise SpriteDiffError(f"bad option {item!r} in spec {text!r}; write key=value, "
                              f"e.g. {name}:20:{next(iter(known), 'key')}=...")
    if key not in known:
        choices = ", ".join(known) or "none"
        raise SpriteDiffError(f"{name} has no option {key!r} (in spec {text!r}); its options: {choices}")
    return key, _convert(value, known[key], key, text)


def _convert(value: str, default, key: str, text: str):
    """Read value as the type of the option's default (bool, int, float, str; None: int, float or str)."""
    if isinstance(default, bool):
        if value.lower() in TRUE_WORDS + FALSE_WORDS:
            return value.lower() in TRUE_WORDS
        raise SpriteDiffError(f"option {key}={value!r} in spec {text!r} is not true or false")
    if isinstance(default, (int, float)):
        try:
            return type(default)(value)
        except ValueError:
            kind = "an integer" if isinstance(default, int) else "a number"
            raise SpriteDiffError(f"option {key}={value!r} in spec {text!r} is not {kind}") from None
    if isinstance(default, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _probe(spec: SamplerSpec, T: int, text: str) -> None:
    """Run the sampler once on a 1-pixel zero-noise model, so a value it rejects fails here, in one line."""
    x_T = torch.zeros(1, 1, 1, 1)
    try:
        SAMPLERS[spec.name](lambda x, t: torch.zeros_like(x), x_T, Schedule.course(T), steps=spec.steps,
                            generator=[torch.Generator().manual_seed(0)], **spec.options)
    except (ValueError, TypeError, SpriteDiffError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SpriteDiffError(f"bad option in spec {text!r}: {message}") from None
