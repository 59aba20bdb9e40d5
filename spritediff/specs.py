"""Sampler specs and the checks every public entry makes on its arguments, once, before any work.

A spec is `name[:steps][:key=value]...`; specs are separated by commas: "ddpm:500,ddim:20,ddim:20:eta=1".
Without steps a sampler gets its default (its SamplerEntry's default_steps, else T). The options a
sampler accepts and their allowed values are declared once, in spritediff.samplers.REGISTRY; the CLI,
the spec strings and spritediff.sample all check values against those declarations.

The check_* functions raise SpriteDiffError with one line that names the argument and what it takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SpriteDiffError
from .checks import check_steps, shown, user_errors
from .samplers.registry import REGISTRY

# the arguments every sampler takes, which are not a sampler's own options
SHARED_ARGUMENTS = ("eps_fn", "x_T", "schedule", "steps", "generator", "callback", "timesteps")


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler name from REGISTRY, its number of steps (model calls) and its own keyword options."""

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


STUDENT_SPEC = "student"  # in a spec list: a distilled student's own sampler and calls ("ddim:4" for a 4-call one)


def parse_model_specs(text: str | None, model, default: str | None = None, flag: str = "--samplers"
                      ) -> list[SamplerSpec]:
    """The specs to run on `model` (a SpriteModel): text, else `default`, else a distilled student's own spec.

    `student` in the list stands for a student's own sampler and calls; on a student every spec is checked
    against what it was trained for (spritediff.student) before any work, so a bench or eval refuses in one line
    rather than after timing the specs before it.
    """
    student = model.student
    own = None if student is None else f"{student.sampler}:{student.calls}"
    if text is None:
        text = own or default
        if text is None:
            raise SpriteDiffError(f"give {flag}, e.g. ddpm:{model.schedule.T},ddim:20")
    parts = []
    for part in text.split(","):
        if part.strip().lower() == STUDENT_SPEC:
            if own is None:
                raise SpriteDiffError(f"spec {STUDENT_SPEC!r} names a distilled student's own sampler; this model is "
                                      f"not a student")
            part = own
        parts.append(part)
    specs = parse_sampler_specs(",".join(parts), model.schedule.T)
    if student is not None:
        for spec in specs:
            student.resolve(spec.name, spec.steps, None, None, spec.options)
    return specs


def parse_sampler_spec(text: str, T: int = 500) -> SamplerSpec:
    """One spec, "ddim:20:eta=1"; see parse_sampler_specs."""
    name, steps, options = read_sampler_spec(text, T)
    return SamplerSpec(name, REGISTRY[name].steps_for(T) if steps is None else steps, options)


def read_sampler_spec(text: str, T: int | None = None) -> tuple[str, int | None, dict]:
    """One spec's sampler name, its steps as written (None when it gives none) and its options, parsed and
    checked; steps are checked against T when T is given (before a model is loaded it may not be known)."""
    name, *fields = [f.strip() for f in text.strip().split(":")]
    name = name.lower()
    if name not in REGISTRY:
        raise SpriteDiffError(f"unknown sampler {name!r} in spec {text!r}; known samplers: {', '.join(REGISTRY)}")
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
    """The options of sampler `name`: {keyword: default}, without the arguments every sampler shares."""
    return REGISTRY[name].defaults()


def check_sampler(name) -> str:
    """The registered sampler called name (case and surrounding spaces ignored, as in spec strings)."""
    if not isinstance(name, str) or name.strip().lower() not in REGISTRY:
        raise SpriteDiffError(f"unknown sampler {shown(name)}; choose from {', '.join(REGISTRY)}")
    return name.strip().lower()


def declared_options(sampler: str, names, where: str = "") -> dict:
    """the sampler's declared options, after refusing any of `names` it does not declare."""
    declared = REGISTRY[sampler].options
    unknown = sorted(set(names) - set(declared))
    if unknown:
        raise SpriteDiffError(f"{sampler} takes no option {', '.join(unknown)}{where}; "
                              f"its options: {', '.join(declared) or 'none'}")
    return declared


def check_options(sampler: str, options: dict, where: str = "") -> dict:
    """options (keyword -> value) checked against the sampler's declared options; values converted."""
    declared = declared_options(sampler, options, where)
    with user_errors(where):
        return {key: declared[key].check(value, key) for key, value in options.items()}


def _parse_steps(field_text: str, text: str, T: int | None) -> int:
    try:
        steps = int(field_text)
    except ValueError:
        raise SpriteDiffError(f"steps {field_text!r} in spec {text!r} is not an integer") from None
    return steps if T is None else check_steps(steps, T, where=f" in spec {text!r}")


def _parse_option(name: str, item: str, text: str) -> tuple[str, object]:
    key, equals, value = (s.strip() for s in item.partition("="))
    declared = REGISTRY[name].options
    if not equals or not key or not value:
        raise SpriteDiffError(f"bad option {item!r} in spec {text!r}; write key=value, "
                              f"e.g. {name}:20:{next(iter(declared), 'key')}=...")
    if key not in declared:
        choices = ", ".join(declared) or "none"
        raise SpriteDiffError(f"{name} has no option {key!r} (in spec {text!r}); its options: {choices}")
    with user_errors(f" (in spec {text!r})"):
        return key, declared[key].parse(value, key)
