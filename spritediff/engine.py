"""The sampling engine: the one place that turns a checked SamplePlan into images.

Every front-end is a thin adapter over it: `spritediff.sample` and the CLI's `sample` (sampling.py builds the
plan), the playground (serve/runs.py, with its batched net injected), the latent tools (latent/api.py) and
bench. The engine owns
- the net's preparation: a copy of the caller's net on the device (never the caller's own), BatchNorm folded
  and channels-last on the fast path, or an injected stand-in used as is (fast.py);
- the Denoiser (context, guidance, prediction type, bf16) and, on CUDA, its graph capture;
- the per-sample noise streams: sample i draws x_T and all its sampler noise from key (seed, i, 0), so sample i
  is the same whatever n, the batch size or the index range run;
- the batch loop (`batch_ranges`, the only one) and the finite check of every batch.

Layers (docs/design.md, "Edge, plan, engine, sampler"): the edge checks arguments once into a frozen
SamplePlan; the engine runs it; a sampler (samplers/) sees only an eps function and tensors.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterator, Mapping

import numpy as np
import numpy.random  # noqa: F401 (imported now, not lazily mid-run: a signal during that import can be lost)
import torch
from PIL import Image

from . import render
from .checkpoint import SpriteModel
from .checks import check_int, shown
from .defaults import BATCH_SIZE, FRAMES_N, GRID_MAX, MAX_BATCH_SIZE  # noqa: F401 (engine's limits)
from .denoiser import Denoiser
from .errors import SpriteDiffError
from .fast import graphed_or_eager, prepare_net
from .finite import check_finite
from .rng import keyed_generator
from .samplers import REGISTRY
from .student import StudentSchedule
from .samplers.common import StepInfo


ContextRows = Callable[[int, int], torch.Tensor]  # (lo, hi) -> (hi - lo, K) float32 CPU rows of samples lo..hi-1


@dataclass(frozen=True)
class SamplePlan:
    """One sampling run, checked at the edge and never changed after: what the engine needs and nothing else.

    sampler: a REGISTRY name; steps: its model calls; options: its own keywords (checked, read-only);
    timesteps: a custom grid (steps = len - 1) or None for the sampler's own. Samples start..start+n-1 are drawn
    (start > 0 runs a share of a larger run, e.g. one torchrun rank's, with the same per-sample streams), in
    batches of batch_size. contexts: the rows of any samples, or None (no context); context_label: how the
    context was given, for the record. frames: how many of the first samples keep their denoising frames.
    precision: "fp32" or "bf16", resolved; fast: the fast path of fast.py. student: the StudentSchedule of a
    distilled student (its own sampler and grid are then sampler and timesteps, and guidance is 0 for the net: its
    own weight is baked in), recorded in settings(); None for an ordinary model.
    """

    sampler: str
    steps: int
    n: int
    seed: int
    device: torch.device
    batch_size: int
    options: Mapping[str, object] = field(default_factory=dict)
    timesteps: tuple[int, ...] | None = None
    guidance: float = 0.0
    contexts: ContextRows | None = None
    context_label: str | None = None
    frames: int = 0
    precision: str = "fp32"
    fast: bool = True
    start: int = 0
    student: StudentSchedule | None = None

    def __post_init__(self):
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", tuple(self.timesteps))

    @property
    def stop(self) -> int:
        return self.start + self.n

    def rows(self, lo: int, hi: int) -> torch.Tensor | None:
        """The (hi-lo, K) context rows of samples lo..hi-1 on the CPU, or None (no context)."""
        return None if self.contexts is None else self.contexts(lo, hi)

    def sampler_kwargs(self) -> dict:
        """The keywords the sampler function takes beyond (eps_fn, x_T, schedule, generator, callback)."""
        grid = {} if self.timesteps is None else {"timesteps": list(self.timesteps)}
        return {"steps": self.steps, **self.options, **grid}

    def settings(self) -> dict:
        """The run's settings as run.json and SampleResult.settings record them; a student's guidance is the
        weight in its weights (its net is called unguided), and its record says so."""
        guidance = self.guidance if self.student is None else self.student.guidance
        record = {} if self.student is None else {"student": {"calls": self.student.calls,
                                                              "guidance": self.student.guidance,
                                                              "teacher": dict(self.student.teacher)}}
        return {"sampler": self.sampler, "steps": self.steps, "n": self.n, "seed": self.seed,
                "guidance": guidance if self.contexts is not None else None, "context": self.context_label,
                "device": str(self.device), "batch_size": self.batch_size, "precision": self.precision,
                "fast": self.fast, **({} if self.timesteps is None else {"timesteps": list(self.timesteps)}),
                **self.options, **record}


@dataclass
class SampleResult:
    """images: (N,H,W,3) uint8 (an in-memory or memory-mapped array); frames: per step (x_t, x0_hat), each
    (F,H,W,3) uint8 for the first F samples; timesteps: t per frame.

    nfe: model calls per sample (a guided call counts once); seconds: wall time of the sampling loop.
    """

    images: np.ndarray
    frames: list = field(repr=False)
    timesteps: list
    nfe: int
    seconds: float
    settings: dict

    def grid(self, nrow: int | None = None, scale: int = 4, limit: int = GRID_MAX) -> Image.Image:
        """A PIL grid of the first `limit` images, nrow per row (default 8), upscaled by scale (nearest)."""
        nrow = None if nrow is None else check_int(nrow, "nrow", 1)
        scale = check_int(scale, "scale", 1, 16)
        return render.grid_image(np.asarray(self.images[:check_int(limit, "limit", 1)]), nrow, scale)

    def save_gif(self, path, nrow: int | None = None, scale: int = 4) -> None:
        """The denoising GIF of the samples that kept frames: x_t left, x0_hat right, the final image last."""
        if not self.frames:
            raise SpriteDiffError("this result kept no frames (sample(..., frames=True) keeps them)")
        nrow = None if nrow is None else check_int(nrow, "nrow", 1)
        kept = len(self.frames[0][0])
        final = np.asarray(self.images[:kept])
        render.save_gif(render.denoise_frames(self.frames + [(final, final)], nrow, check_int(scale, "scale", 1, 16)),
                        path)


def sample_generators(seed: int, n: int, stream: int = 0, start: int = 0) -> list[torch.Generator]:
    """Generators of samples start..start+n-1, seeded from (seed, index, stream): sample i never depends on n."""
    return [keyed_generator(seed, i, stream) for i in range(start, start + n)]


def initial_noise(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *shape) float32 x_T, row i drawn from generators[i]."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def batch_ranges(start: int, stop: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(lo, hi) of each batch of samples start..stop-1: the one batch loop of every front-end."""
    for lo in range(start, stop, batch_size):
        yield lo, min(lo + batch_size, stop)


def merge_frames(kept: list, batch_frames: list) -> list:
    """Append one batch's frames (per step) to the frames of the batches before it."""
    if not kept or not batch_frames:
        return kept or batch_frames
    return [(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])) for a, b in zip(kept, batch_frames)]


class CountingEps:
    """Wraps an eps function and counts its calls."""

    def __init__(self, eps_fn):
        self.eps_fn, self.calls = eps_fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.eps_fn(x, t)


def resolve_device(device) -> torch.device:
    """cpu, cuda, cuda:K or auto (None) as a torch.device this machine has; anything else is a user error."""
    if isinstance(device, torch.device):
        device = str(device)
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda"):
        raise SpriteDiffError(f"unknown device {shown(device)}; use cpu, cuda, cuda:K or auto")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise SpriteDiffError(f"unknown device {shown(device)}; use cpu, cuda, cuda:K or auto") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise SpriteDiffError("--device cuda asked for, but PyTorch sees no CUDA device here")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise SpriteDiffError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return parsed


class Clock:
    """Wall seconds since start(), with the device's queued work finished at both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self._sync()
        self.started = time.perf_counter()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def stop(self) -> float:
        self._sync()
        return time.perf_counter() - self.started


class Engine:
    """A model ready to sample on one device: its prepared net, its Denoisers, its noise streams.

    The net is a copy of model.net (the caller's net keeps its device, mode and weights): with fast, folded and
    channels-last in float32 (fast.prepare_net); in another dtype (float64, the exact inversion's floor) the plain
    net. A stand-in that is no nn.Module (the server's BatchedNet, serve/batcher.batched_model) is injected as the
    model's net and used as is. precision: "fp32" or "bf16" (resolved), how Denoisers run the net.
    """

    def __init__(self, model: SpriteModel, device: torch.device, fast: bool = True, precision: str = "fp32",
                 dtype: torch.dtype = torch.float32):
        self.model, self.device, self.fast, self.precision, self.dtype = model, device, fast, precision, dtype
        if not isinstance(model.net, torch.nn.Module):  # an injected stand-in: nothing to copy or prepare
            self.net = model.net.to(device=device, dtype=dtype).eval()
        elif dtype == torch.float32:
            self.net = prepare_net(model.net, device, fast)
        else:
            self.net = copy.deepcopy(model.net).to(device=device, dtype=dtype).eval()
        self.current: CountingEps | None = None  # the eps function of the batch being sampled (its calls so far)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        return self.net.in_channels, self.net.height, self.net.height

    def eps(self, contexts: torch.Tensor | None = None, guidance: float = 0.0,
            example_x: torch.Tensor | None = None) -> CountingEps:
        """The counted eps function for (B, K) context rows (or None) and a guidance weight: the Denoiser on the
        prepared net, replayed from a CUDA graph captured on example_x's shape when fast on CUDA."""
        ctx = None if contexts is None else contexts.to(self.device)
        eps_fn = Denoiser(self.net, self.model.schedule, ctx, guidance, bf16=self.precision == "bf16",
                          prediction_type=self.model.prediction_type)
        if self.fast and self.device.type == "cuda" and example_x is not None:
            eps_fn = graphed_or_eager(eps_fn, example_x)
        return CountingEps(eps_fn)

    def noise(self, seed: int, lo: int, hi: int) -> tuple[list[torch.Generator], torch.Tensor]:
        """Samples lo..hi-1's generators (stream (seed, i, 0)) and their (hi-lo, C, H, W) x_T on the device."""
        generators = sample_generators(seed, hi - lo, start=lo)
        return generators, initial_noise(generators, self.shape).to(device=self.device, dtype=self.dtype)

    def check_finite(self, x0: torch.Tensor, first: int, guidance: float, rows: torch.Tensor | None) -> None:
        """A SpriteDiffError naming the first non-finite sample of a batch and its likely cause."""
        check_finite(x0, first, self.model.net, guidance, rows)

    def sample(self, plan: SamplePlan, images: np.ndarray, callback=None, bar=None) -> SampleResult:
        """Samples plan.start..plan.stop-1, batch by batch, into images (n, H, W, C) uint8 (row 0 is sample start).

        callback(info, first): after every step, with the batch's StepInfo and its first sample index.
        bar: a progress bar (tqdm) updated once per step, or None.
        """
        kept, timesteps, nfe, seconds = [], [], 0, 0.0
        for lo, hi in batch_ranges(plan.start, plan.stop, plan.batch_size):
            x0, frames, batch_timesteps, nfe, batch_seconds = self._sample_batch(plan, lo, hi, callback, bar)
            self.check_finite(x0, lo, plan.guidance, plan.rows(lo, hi))
            images[lo - plan.start:hi - plan.start] = render.to_uint8(x0)
            seconds += batch_seconds
            kept = merge_frames(kept, frames)
            timesteps = timesteps or batch_timesteps
        return SampleResult(images, kept, timesteps, nfe, seconds, plan.settings())

    def _sample_batch(self, plan: SamplePlan, lo: int, hi: int, callback, bar):
        """Samples lo..hi-1: (x0, frames, timesteps, nfe, seconds), timed from the moment their eps function is
        ready (a CUDA graph's capture is set-up)."""
        generators, x_T = self.noise(plan.seed, lo, hi)
        eps_fn = self.current = self.eps(plan.rows(lo, hi), plan.guidance, x_T)
        keep = max(0, min(hi, plan.start + plan.frames) - lo)  # rows of this batch that keep frames
        frames, timesteps = [], []

        def record(info: StepInfo) -> None:
            if bar is not None:
                bar.update(1)
            if keep:
                frames.append((render.to_uint8(info.x_t[:keep]), render.to_uint8(info.x0_hat[:keep])))
                timesteps.append(info.t)
            if callback is not None:
                callback(info, lo)

        watched = keep or bar is not None or callback is not None
        clock = Clock(self.device)
        x0 = REGISTRY[plan.sampler].fn(eps_fn, x_T, self.model.schedule, generator=generators,
                                       callback=record if watched else None, **plan.sampler_kwargs())
        return x0, frames, timesteps, eps_fn.calls, clock.stop()


def total_steps(plan: SamplePlan) -> int:
    """Sampler steps of the whole run, all batches (a progress bar's total)."""
    return plan.steps * math.ceil(plan.n / plan.batch_size)
