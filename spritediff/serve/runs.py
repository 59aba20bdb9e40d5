"""What one sample request (or one race lane) does on its job thread: a thin adapter over spritediff.engine.

The engine runs samples 0..n-1 as one batch exactly as for spritediff.sample: x_T row i from noise stream
(seed, i), the sampler's noise from the same per-row generators, context rows from spritediff.sample's rules and a
Denoiser with the guidance; only its net is an injected BatchedNet whose calls are merged with other requests'
(batcher.py). So the
sprites equal `spritediff sample`'s with the same seed and settings, to within one grey level (a merged call has
another batch size, and convolutions of different batch sizes may round differently).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..checkpoint import SpriteModel
from ..engine import FRAMES_N, Engine, SamplePlan, SampleResult
from ..pixels import to_uint8
from ..samplers.common import StepInfo
from .batcher import ModelBatcher, batched_model
from .images import data_url, grid_url
from .jobs import Job
from .results import ResultStore
from .validation import SampleRequest

GIF_FRAMES = 60  # frames a GIF download shows at most (as spritediff sample's denoise.gif)


class FrameKeeper:
    """Keeps (x_t, x0_hat) uint8 frames of the first `rows` samples, evenly thinned: never more than 2 * limit
    frames in memory, however many steps (each time the count passes it, every other frame is dropped)."""

    def __init__(self, rows: int, limit: int = GIF_FRAMES):
        self.rows, self.limit = rows, limit
        self.frames: list[tuple[np.ndarray, np.ndarray]] = []
        self.timesteps: list[int] = []
        self.stride, self.count = 1, 0

    def add(self, info: StepInfo) -> None:
        if self.count % self.stride == 0:
            self.frames.append((to_uint8(info.x_t[:self.rows]), to_uint8(info.x0_hat[:self.rows])))
            self.timesteps.append(info.t)
            if len(self.frames) > 2 * self.limit:
                self.frames, self.timesteps, self.stride = self.frames[::2], self.timesteps[::2], 2 * self.stride
        self.count += 1

    def kept(self) -> tuple[list, list]:
        """At most `limit` of the frames, evenly spaced, the last always: (frames, timesteps)."""
        if len(self.frames) <= self.limit:
            return self.frames, self.timesteps
        keep = np.unique(np.linspace(0, len(self.frames) - 1, self.limit).round().astype(int))
        return [self.frames[i] for i in keep], [self.timesteps[i] for i in keep]


class FrameStreamer:
    """Emits a frame event at the first step and then at most once per `interval` seconds.

    The event carries the uint8 pair (x_t, x0_hat) of all n samples; the HTTP layer encodes it as a PNG.
    """

    def __init__(self, job: Job, engine: Engine, steps: int, interval: float, enabled: bool):
        self.job, self.engine, self.steps, self.interval, self.enabled = job, engine, steps, interval, enabled
        self.last = -float("inf")

    def step(self, info: StepInfo) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.interval:
            return
        self.last = now
        self.job.emit({"type": "frame", "step": info.index, "t": info.t, "nfe": self.engine.current.calls,
                       "of": self.steps, "elapsed": round(now - self.job.started_at, 4),
                       "pair": (to_uint8(info.x_t), to_uint8(info.x0_hat))})


def run_sample(job: Job, request: SampleRequest, model: SpriteModel, batcher: ModelBatcher,
               store: ResultStore | None, interval: float) -> dict:
    """Sample request.n sprites on this thread with merged model calls; returns the "done" event (grid, NFE,
    seconds, the result's id for downloads). A non-finite sample is a SpriteDiffError (one line to the client)."""
    rows = request.context.rows(model, request.n, request.seed)
    student = model.student  # a distilled student (the race's student lane): its own grid, its net unguided
    plan = SamplePlan(sampler=request.sampler, steps=request.steps, n=request.n, seed=request.seed,
                      device=torch.device("cpu"), batch_size=request.n, options=request.options,
                      timesteps=None if student is None else student.timesteps,
                      guidance=request.guidance if student is None else 0.0,
                      contexts=None if rows is None else (lambda lo, hi: rows[lo:hi]),
                      fast=False, student=student)  # the batcher's net is prepared once for all requests (app.py)
    engine = Engine(batched_model(model, batcher, job.check), plan.device, fast=False)
    keeper = FrameKeeper(min(request.n, FRAMES_N))
    streamer = FrameStreamer(job, engine, request.steps, interval, request.frames)

    def callback(info: StepInfo, first: int) -> None:
        job.check()
        keeper.add(info)
        streamer.step(info)

    with batcher.participant():
        run = engine.sample(plan, np.empty((request.n, *engine.shape[1:], engine.shape[0]), np.uint8), callback)
    images, seconds = run.images, run.seconds
    settings = request.settings(model.classes)
    result = SampleResult(images, *keeper.kept(), run.nfe, seconds, settings)
    result_id = store.put(result, f"{request.name}{request.steps}-seed{request.seed}") if store else None
    return {"type": "done", "id": result_id, "nfe": run.nfe, "seconds": round(seconds, 4),
            "images_per_second": round(request.n / max(seconds, 1e-9), 2), "settings": settings,
            "grid": grid_url(images), "sprites": [data_url(image) for image in images]}
