"""Request bodies -> checked request objects. Every field is checked here, server-side, before any work.

A bad field is a SpriteDiffError with one line naming the field and what it takes (HTTP 400); a body that is too
large, not JSON or not an object is an HTTPError with its own status. The checks reuse spritediff.specs and the
samplers' declared OPTIONS, so the page, the CLI and the Python API accept the same values.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checkpoint import SpriteModel
from ..context import DRAWN, check_has_classes, check_mix_available, context_vector
from ..defaults import DEFAULT_GUIDANCE, PLAYGROUND_RACE, PLAYGROUND_SAMPLE, default_steps
from ..errors import SpriteDiffError
from ..latent.api import METHODS, REPAINT_DEFAULT
from ..samplers import REGISTRY
from ..sampling import model_contexts
from ..checks import check_guidance, check_int, check_number, check_seed, shown
from ..specs import check_options, check_sampler
from .config import ServeConfig
from .images import decode_upload

MAX_SPEC_CHARS = 500  # a context spec string
RACE_LANES = ("ddpm", "ddim")  # the race's fixed lanes; a few-step solver joins them
DEFAULT_SOLVER = "dpmpp-2m"
STUDENT_LANE = "student"  # the race's fourth lane, with `serve --student`
EDIT_OPS = ("reconstruct", "interpolate", "vary", "inpaint")


class HTTPError(Exception):
    """A request refused before its fields are read: status (413, 415, 400) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_json(body: bytes) -> dict:
    """The JSON object of a request body; NaN and Infinity are refused, as is anything but an object."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not allowed (numbers must be finite)")

    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise HTTPError(400, f"the request body is not valid JSON: {' '.join(str(err).split())[:200]}") from None
    if not isinstance(payload, dict):
        raise HTTPError(400, f"the request body must be a JSON object, got {type(payload).__name__}")
    return payload


def _fields(payload: dict, allowed: tuple[str, ...], what: str) -> dict:
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise SpriteDiffError(f"unknown field {unknown[0][:40]!r} in a {what} request; fields: {', '.join(allowed)}")
    return payload


def _bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpriteDiffError(f"{name} must be true or false, got {shown(value)}")
    return value


@dataclass(frozen=True)
class Context:
    """What the samples are conditioned on. mode: 'none', 'random' (a random class per sample, from stream
    (seed, i, 1) as in spritediff.sample), 'mix' (a class per sample drawn with the model's training class mix,
    from the same stream) or 'blend'; vector: the blend's weight per class (len(classes),)."""

    mode: str
    vector: tuple[float, ...] = ()

    def spec(self, classes) -> str:
        """The context as a spec string that spritediff.sample and the latent API take (exact weights)."""
        if self.mode != "blend":
            return self.mode
        return ",".join(f"{name}={weight!r}" for name, weight in zip(classes, self.vector))

    def label(self, classes) -> str:
        """A short human label: "hero=1,food=0.6" (non-zero weights only), "random", "mix" or "none"."""
        if self.mode != "blend":
            return self.mode
        return ",".join(f"{name}={weight:g}" for name, weight in zip(classes, self.vector) if weight) or "zero"

    def rows(self, model: SpriteModel, n: int, seed: int) -> torch.Tensor | None:
        """(n, K) float32 context rows of samples 0..n-1, exactly as spritediff.sample makes them, or None."""
        if self.mode == "none":
            return None
        if self.mode in DRAWN:
            return model_contexts(self.mode, model, n, seed)
        return torch.tensor(self.vector, dtype=torch.float32).expand(n, -1)


def parse_context_field(value, model: SpriteModel, config: ServeConfig, name: str = "context") -> Context:
    """None, "none", "random", "mix" (the model's training class mix, if it stores one), a spec string ("hero",
    "hero=1,food=0.6") or an object {"hero": 1, "food": 0.6}."""
    if value is None:
        return Context("none")
    if isinstance(value, dict):
        if value:
            check_has_classes(str(next(iter(value))), model.classes)
        return _blend_from_object(value, model.classes, config, name)
    if not isinstance(value, str):
        raise SpriteDiffError(f"{name} must be a class name, a blend like 'hero=1,food=0.6', an object of weights, "
                              f"'random', 'mix' or 'none'; got {shown(value)}")
    if len(value) > MAX_SPEC_CHARS:
        raise SpriteDiffError(f"{name} is longer than {MAX_SPEC_CHARS} characters")
    text = value.strip().lower()
    if text in ("", "none"):
        return Context("none")
    check_has_classes(text, model.classes)
    if text in DRAWN:
        if text == "mix":
            check_mix_available(model.class_mix)
        return Context(text)
    return _blend(context_vector(text, model.classes), config, name)


def _blend_from_object(weights: dict, classes, config: ServeConfig, name: str) -> Context:
    vector = torch.zeros(len(classes))
    for key, weight in weights.items():
        if key not in classes:
            raise SpriteDiffError(f"unknown class {key[:40]!r} in {name}; classes are: {', '.join(classes)}")
        vector[classes.index(key)] = check_number(weight, f"{name} weight of {key}")
    return _blend(vector, config, name)


def _blend(vector: torch.Tensor, config: ServeConfig, name: str) -> Context:
    if vector.abs().max() > config.max_weight:
        raise SpriteDiffError(f"{name} weights must be between -{config.max_weight:g} and {config.max_weight:g}")
    return Context("blend", tuple(float(w) for w in vector))


@dataclass(frozen=True)
class SampleRequest:
    """One sample run: sampler name and its declared options, steps (model calls), n, seed, context, guidance.
    frames: stream denoising frames while it runs."""

    sampler: str
    steps: int
    options: dict = field(hash=False)
    n: int
    seed: int
    context: Context
    guidance: float
    frames: bool = True
    lane: str | None = None  # the race lane's name: the sampler's, or STUDENT_LANE (then its own model and grid)

    @property
    def name(self) -> str:
        return self.lane or self.sampler

    def settings(self, classes) -> dict:
        return {"sampler": self.sampler, "steps": self.steps, "n": self.n, "seed": self.seed,
                "context": self.context.label(classes), "guidance": self.guidance, **self.options,
                **({} if self.lane is None else {"lane": self.lane})}


SAMPLE_FIELDS = ("sampler", "steps", "options", "n", "seed", "context", "guidance", "frames")


def parse_sample(payload: dict, model: SpriteModel, config: ServeConfig) -> SampleRequest:
    """POST /api/sample's body -> SampleRequest. Defaults: spritediff.defaults.PLAYGROUND_SAMPLE's sampler and
    steps (ddim-20, interactive; `spritediff sample`'s is ddpm-50), n 16 (the page's), seed 0, no context (the page
    itself starts on PLAYGROUND_SAMPLE's context, the training mix), its guidance."""
    _fields(payload, SAMPLE_FIELDS, "sample")
    sampler = check_sampler(payload.get("sampler", PLAYGROUND_SAMPLE.sampler))
    options = payload.get("options", {})
    if not isinstance(options, dict):
        raise SpriteDiffError(f"options must be an object like {{\"eta\": 0.5}}, got {shown(options)}")
    return SampleRequest(
        sampler=sampler, steps=_steps(payload.get("steps"), sampler, model, config),
        options=check_options(sampler, options, " (in options)"),
        n=check_int(payload.get("n", 16), "n", 1, config.max_n), seed=check_seed(payload.get("seed", 0)),
        context=parse_context_field(payload.get("context"), model, config),
        guidance=_guidance(payload.get("guidance", PLAYGROUND_SAMPLE.guidance), config),
        frames=_bool(payload.get("frames", True), "frames"))


def _steps(value, sampler: str, model: SpriteModel, config: ServeConfig) -> int:
    high = min(model.schedule.T, config.max_steps)
    if value is None:
        return min(default_steps(PLAYGROUND_SAMPLE, sampler, model.schedule.T), high)
    return check_int(value, "steps", 1, high)


def _guidance(value, config: ServeConfig) -> float:
    return check_guidance(value, "guidance", config.max_guidance)


@dataclass(frozen=True)
class RaceRequest:
    """DDPM, DDIM and a few-step solver from the same noise and context: one SampleRequest per lane."""

    lanes: tuple[SampleRequest, ...]


RACE_FIELDS = ("n", "seed", "context", "guidance", "solver")


def parse_race(payload: dict, model: SpriteModel, config: ServeConfig,
               student: SpriteModel | None = None) -> RaceRequest:
    """POST /api/race's body: n (default 4), seed, context, guidance, solver (a registered few-step sampler,
    default dpmpp-2m). Each lane runs its sampler's default steps (ddpm T, ddim 20, solvers 10). With a distilled
    student (`serve --student`), a fourth lane, STUDENT_LANE, runs it on its own grid from the same noise and
    context, with the guidance in its weights (the race's guidance is the other lanes')."""
    _fields(payload, RACE_FIELDS, "race")
    solver = check_sampler(payload.get("solver", DEFAULT_SOLVER))
    if solver in RACE_LANES:
        raise SpriteDiffError(f"solver must be a few-step solver other than ddpm and ddim, got {solver!r}; choose "
                              f"from {', '.join(race_solvers())}")
    common = {"n": check_int(payload.get("n", 4), "n", 1, config.max_race_n),
              "seed": check_seed(payload.get("seed", 0)),
              "context": parse_context_field(payload.get("context"), model, config),
              "guidance": _guidance(payload.get("guidance", PLAYGROUND_RACE.guidance), config)}
    lanes = tuple(SampleRequest(name, _steps(None, name, model, config), {}, **common)
                  for name in (*RACE_LANES, solver))
    if student is not None:
        own = student.student
        lanes += (SampleRequest(own.sampler, own.calls, {}, **{**common, "guidance": own.guidance},
                                lane=STUDENT_LANE),)
    return RaceRequest(lanes)


def race_solvers() -> list[str]:
    return [name for name in REGISTRY if name not in RACE_LANES]


@dataclass(frozen=True)
class EditRequest:
    """One edit panel operation on spritediff.latent's API. image: (H,W,3) uint8; image_b for interpolate; mask
    (H,W) float32 1 = fill in, for inpaint. The other fields are the API's arguments."""

    op: str
    image: np.ndarray = field(hash=False, compare=False)
    image_b: np.ndarray | None = field(default=None, hash=False, compare=False)
    mask: np.ndarray | None = field(default=None, hash=False, compare=False)
    method: str = "ddim"
    steps: int = 50
    frames: int = 8
    strength: float | None = None
    context: Context = Context("none")
    n: int = 4
    seed: int = 0
    guidance: float = 0.0
    resample: int = REPAINT_DEFAULT


EDIT_FIELDS = {
    "reconstruct": ("op", "image", "method", "steps", "context"),
    "interpolate": ("op", "image", "image_b", "method", "steps", "frames", "context"),
    "vary": ("op", "image", "strength", "context", "n", "seed", "steps", "guidance"),
    "inpaint": ("op", "image", "mask", "strength", "context", "n", "seed", "steps", "guidance", "resample"),
}


def parse_edit(payload: dict, model: SpriteModel, config: ServeConfig) -> EditRequest:
    """POST /api/edit's body -> EditRequest; see EDIT_FIELDS for each op's fields."""
    op = payload.get("op")
    if op not in EDIT_OPS:
        raise SpriteDiffError(f"op must be one of {', '.join(EDIT_OPS)}, got {shown(op)}")
    _fields(payload, EDIT_FIELDS[op], op)
    size = model.net.height
    fields = {"op": op, "image": _upload(payload.get("image"), size, config, "image")}
    if op == "interpolate":
        fields["image_b"] = _upload(payload.get("image_b"), size, config, "image_b")
    if op in ("reconstruct", "interpolate"):
        fields.update(_inversion_fields(payload, config, op))
    else:
        fields.update(_sdedit_fields(payload, config, op))
    if op == "inpaint":
        fields["mask"] = _mask(payload.get("mask"), size, config)
    context = parse_context_field(payload.get("context"), model, config)
    if context.mode in DRAWN and op in ("reconstruct", "interpolate"):
        raise SpriteDiffError(f"context {context.mode!r} does not apply to {op}; give a class, a blend or none")
    return EditRequest(**fields, context=context)


def _upload(value, size: int, config: ServeConfig, name: str) -> np.ndarray:
    if value is None:
        raise SpriteDiffError(f"{name} is required: a {size}x{size} RGB PNG as a base64 data URL")
    return decode_upload(value, size, config.max_upload_bytes, name)


def _inversion_fields(payload: dict, config: ServeConfig, op: str) -> dict:
    method = payload.get("method", "ddim")
    if method not in METHODS:
        raise SpriteDiffError(f"method must be one of {', '.join(METHODS)}, got {shown(method)}")
    default_steps = 50 if op == "reconstruct" else 20
    fields = {"method": method, "steps": check_int(payload.get("steps", default_steps), "steps", 1,
                                                   config.max_edit_steps)}
    if op == "interpolate":
        fields["frames"] = check_int(payload.get("frames", 8), "frames", 2, config.max_interp_frames)
    return fields


def _sdedit_fields(payload: dict, config: ServeConfig, op: str) -> dict:
    strength = payload.get("strength")
    return {"strength": None if strength is None else check_number(strength, "strength", 0, 1),
            "n": check_int(payload.get("n", 4), "n", 1, config.max_edit_n),
            "seed": check_seed(payload.get("seed", 0)),
            "steps": check_int(payload.get("steps", 50), "steps", 1, config.max_edit_steps),
            "guidance": _guidance(payload.get("guidance", DEFAULT_GUIDANCE), config),
            "resample": check_int(payload.get("resample", REPAINT_DEFAULT), "resample", 1, config.max_resample)
            if op == "inpaint" else 1}


def _mask(value, size: int, config: ServeConfig) -> np.ndarray:
    """A list of size*size 0/1 numbers (row by row; 1 = fill in) or a PNG data URL (white = fill in)."""
    if isinstance(value, list):
        if len(value) != size * size or not all(_is_bit(v) for v in value):
            raise SpriteDiffError(f"mask must be {size * size} numbers, each 0 (keep) or 1 (fill in), row by row")
        mask = np.asarray(value, dtype=np.float32).reshape(size, size)
    elif isinstance(value, str):
        mask = (decode_upload(value, size, config.max_upload_bytes, "mask", grey=True) > 127).astype(np.float32)
    else:
        raise SpriteDiffError(f"mask is required for inpaint: {size * size} numbers 0/1 or a PNG data URL")
    if not mask.any():
        raise SpriteDiffError("mask has no pixel to fill in (all 0)")
    return mask


def _is_bit(value) -> bool:
    """0 or 1 as a JSON number (true and false are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1)
