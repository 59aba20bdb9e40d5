"""The sampling defaults of every front-end, declared once; each front-end reads its own line here.

`spritediff sample`, `spritediff.sample`, `spritediff eval` and the playground (which fetches this table from
GET /api/info, "defaults") differ on purpose; docs/design.md, "Defaults, and why they differ", gives the
reasons, and tests/test_defaults.py checks that each front-end uses its line. No torch here: the CLI's --help
prints these values.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# docs/results.md, guidance table: precision, recall and class accuracy gain over 0; 0 is the plain conditional model
DEFAULT_GUIDANCE = 0.5
FRAMES_N = 32  # samples whose denoising frames frames=True keeps (the GIF shows these)
GRID_MAX = 1024  # sprites a grid shows at most (the first ones)
BATCH_SIZE = {"cpu": 128, "cuda": 1024}  # default samples per model call, by device type
MAX_BATCH_SIZE = 65_536  # a batch is one tensor on the device: this bounds sampling's memory whatever n is
TWO_SAMPLE_SPLITS = 2  # eval's two-sample test: repeats on other splits, for the test's own noise
MAX_BENCH_N = 100_000  # bench times one batch of n, so n bounds its memory
MODEL_GUIDANCE = None  # as a default guidance: the model's own (DEFAULT_GUIDANCE, or a distilled student's)
MIX = "mix"  # as a default context: the model's stored training class mix, or no context for a model without one


@dataclass(frozen=True)
class SampleDefaults:
    """What a front-end samples with when the user says nothing.

    sampler: a registered sampler, or None where the front-end has no single sampler (eval's specs, the Race's
    lanes); steps: model calls, or None for the sampler's own default (REGISTRY); context: a spec, MIX (the
    model's class mix where it stores one, else none) or None (no context); guidance: used with a context, or
    MODEL_GUIDANCE (None): the model's own, DEFAULT_GUIDANCE for an ordinary model and the weight baked into a
    distilled student (spritediff.student), resolved by sampling.plan_sample.
    """

    sampler: str | None
    steps: int | None
    context: str | None
    guidance: float | None = DEFAULT_GUIDANCE

    def public(self) -> dict:
        return asdict(self)


# the cleanest sprites of the default model (docs/default_model.md); a student samples with its own sampler
CLI_SAMPLE = SampleDefaults("ddpm", 50, MIX, MODEL_GUIDANCE)
API_SAMPLE = SampleDefaults("ddim", None, None, MODEL_GUIDANCE)  # fast and deterministic; a context only when asked
PLAYGROUND_SAMPLE = SampleDefaults("ddim", None, MIX)  # interactive: DDIM-20 answers in a blink; classes as sample's
PLAYGROUND_RACE = SampleDefaults(None, None, None)  # lanes ddpm, ddim and a solver, each its own default steps
EVAL = SampleDefaults(None, None, None, MODEL_GUIDANCE)  # the model's own p(x) against the real set

DEFAULTS = {"cli_sample": CLI_SAMPLE, "api_sample": API_SAMPLE, "playground_sample": PLAYGROUND_SAMPLE,
            "playground_race": PLAYGROUND_RACE, "eval": EVAL}


def default_steps(defaults: SampleDefaults, sampler: str, T: int) -> int:
    """The steps a front-end runs `sampler` with when none are given: its own line's steps for its own default
    sampler, else the sampler's registered default; never more than T."""
    from .samplers.registry import REGISTRY

    if defaults.steps is not None and sampler == defaults.sampler:
        return min(defaults.steps, T)
    return REGISTRY[sampler].steps_for(T)
