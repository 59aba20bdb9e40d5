"""A distilled student's own schedule: the few-step grid it was trained on, its sampler, the guidance it has
baked in and the teacher it came from (spritediff.distill makes students; docs/design.md, "Distillation").

A student is a ContextUnet like any model, but it is only right on its grid: each of its steps was trained to
land where two of its teacher's DDIM steps land. So a student samples with deterministic DDIM over exactly
those times, one call per step, and `StudentSchedule.resolve` turns sample()'s arguments into that run (or a
one-line error for a sampler, step count or grid of another kind). Its classifier-free guidance is part of its
weights (the guided teacher was its target), so it samples with one branch, not two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import SpriteDiffError
from .checks import check_timesteps, shown

STUDENT_SAMPLER = "ddim"  # deterministic DDIM (eta 0) over the student's grid: what its steps were trained as


@dataclass(frozen=True)
class StudentSchedule:
    """timesteps: the grid, calls + 1 strictly decreasing ints from <= T to 0; guidance: the teacher's
    classifier-free guidance weight the student reproduces with its context (its no-context path is the
    teacher's unguided one); teacher: a record of the teacher (model, sha256 of its weights, command);
    start_steps: the teacher's DDIM steps the first round divided."""

    timesteps: tuple[int, ...]
    guidance: float
    teacher: dict = field(default_factory=dict)
    start_steps: int = 0
    sampler: str = STUDENT_SAMPLER

    @property
    def calls(self) -> int:
        return len(self.timesteps) - 1

    def to_config(self) -> dict:
        return {"sampler": self.sampler, "timesteps": list(self.timesteps), "calls": self.calls,
                "guidance": self.guidance, "start_steps": self.start_steps, "teacher": self.teacher}

    def describe(self) -> str:
        """"a 4-call distilled student (ddim on 500, 375, 250, 125, 0)", for messages (a long grid elided)."""
        shown_times = [*self.timesteps[:3], "...", *self.timesteps[-2:]] if self.calls > 8 else self.timesteps
        grid = ", ".join(str(t) for t in shown_times)
        return f"a {self.calls}-call distilled student ({self.sampler} on {grid})"

    def resolve(self, sampler, steps, timesteps, guidance, options: dict):
        """sample()'s (sampler, steps, timesteps, guidance, options) for this student: its sampler on its grid,
        guidance 0 for the net (its own is in its weights). steps None or its calls, timesteps None or its grid,
        guidance None or its own, sampler its own, options none but eta 0; anything else is a SpriteDiffError."""
        what = self.describe()
        if sampler != self.sampler:
            raise SpriteDiffError(f"sampler {shown(sampler)}: this model is {what}; it samples only with its own "
                                  f"sampler (leave the sampler out)")
        if steps is not None and steps != self.calls:
            raise SpriteDiffError(f"steps {shown(steps)}: this model is {what}; it samples in {self.calls} steps "
                                  f"only (leave steps out, or distil another student with that many calls)")
        if timesteps is not None and list(timesteps) != list(self.timesteps):
            raise SpriteDiffError(f"timesteps {shown(timesteps)}: this model is {what}; it samples on that grid only")
        extra = {k: v for k, v in options.items() if not (k == "eta" and v == 0)}
        if extra:
            raise SpriteDiffError(f"option {', '.join(extra)}: this model is {what}, deterministic on its grid; "
                                  f"it takes no sampler options")
        if guidance is not None and guidance != self.guidance:
            raise SpriteDiffError(f"guidance {shown(guidance)}: this model is {what} with guidance {self.guidance:g} "
                                  f"in its weights (leave guidance out, or distil another student with that "
                                  f"--guidance)")
        return self.sampler, None, list(self.timesteps), 0.0, {}


def read_student(config, T: int, path) -> StudentSchedule | None:
    """The "student" section of a model file's metadata (None where there is none), checked: the sampler,
    a grid for this T, a finite guidance >= 0, the teacher record an object."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise SpriteDiffError(f"{path}: metadata student must be a JSON object, got {shown(config)}")
    if config.get("sampler") != STUDENT_SAMPLER:
        raise SpriteDiffError(f"{path}: metadata student.sampler must be {STUDENT_SAMPLER!r}, got "
                              f"{shown(config.get('sampler'))}")
    try:
        grid = check_timesteps(config.get("timesteps"), T)
    except SpriteDiffError as err:
        raise SpriteDiffError(f"{path}: metadata student.{err}") from None
    guidance, teacher, start = config.get("guidance"), config.get("teacher", {}), config.get("start_steps", 0)
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or \
            guidance < 0:
        raise SpriteDiffError(f"{path}: metadata student.guidance must be a finite number >= 0, got {shown(guidance)}")
    if not isinstance(teacher, dict) or isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise SpriteDiffError(f"{path}: metadata student.teacher must be an object and start_steps an integer >= 0")
    return StudentSchedule(tuple(grid), float(guidance), teacher, start)
