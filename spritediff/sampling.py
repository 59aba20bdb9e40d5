"""The notebook-level API: sample a SpriteModel with any registered sampler, per-sample noise streams.

Every argument is checked before any work (spritediff.specs); n samples are drawn in batches of
`batch_size`, so memory does not grow with n beyond the output array, which may be a memory-mapped
.npy file (`out=`). Only the first `frames` samples keep their denoising frames (for the GIF).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.random  # noqa: F401 (imported now, not lazily mid-run: a signal during that import can be lost)
import torch
from PIL import Image
from tqdm import tqdm

from . import render
from .checkpoint import SpriteModel
from .context import DRAWN, check_mix_available, parse_context
from .denoiser import DEFAULT_GUIDANCE, Denoiser
from .errors import SpriteDiffError
from .fast import graphed_or_eager, prepare_net, resolve_precision
from .finite import check_finite
from .rng import keyed_generator
from .samplers import DEFAULT_STEPS, SAMPLERS, StepInfo
from .samplers.common import check_timesteps, shown
from .specs import check_guidance, check_int, check_options, check_sampler, check_seed, check_steps

FRAMES_N = 32  # samples whose denoising frames frames=True keeps (the GIF shows these)
GRID_MAX = 1024  # sprites a grid shows at most (the first ones)
BATCH_SIZE = {"cpu": 128, "cuda": 1024}  # default samples per model call, by device type
MAX_BATCH_SIZE = 65_536  # a batch is one tensor on the device: this bounds sampling's memory whatever n is


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


def sample(model: SpriteModel, sampler: str = "ddim", steps: int | None = None, n: int = 32,
           context: str | torch.Tensor | np.ndarray | None = None, guidance: float = DEFAULT_GUIDANCE,
           seed: int = 0, device: str | torch.device | None = "cpu", batch_size: int | None = None,
           frames: bool | int = True, progress: bool = False, fast: bool = True,
           precision: str | torch.dtype = "auto", callback=None, out: np.ndarray | None = None,
           timesteps=None, **sampler_options) -> SampleResult:
    """Draw n samples, in batches of batch_size (default: BATCH_SIZE of the device, at most n).

    steps: model calls, 1..T (default: the sampler's, ddpm T, ddim 20). context: a spec string (see
    spritediff.context), an (n, n_cfeat) or (n_cfeat,) tensor or array, or None. guidance: w >= 0, finite.
    seed: 0..2^63-1; sample i uses noise stream (seed, i). frames: True keeps the denoising frames of the first
    FRAMES_N samples, an int k those of the first k, False none. out: an (n, H, W, 3) uint8 array (e.g. a
    memory-mapped .npy) to write the images into instead of a new one. sampler_options: the sampler's own
    keywords (spritediff.samplers.OPTIONS).
    fast: the fast path of spritediff.fast (BatchNorm folded; channels-last on the CPU; CUDA graphs on CUDA);
    False runs the net as stored. precision: "fp32" (exact and bit-reproducible), "bf16" (the net under bf16
    autocast) or "auto" (bf16 on a CPU with native bf16, else fp32); torch.float32 / torch.bfloat16 also work.
    timesteps: a custom grid instead of the sampler's own, e.g. [499, 300, 150, 50, 0] (strictly decreasing ints,
    the first <= T, the last 0); steps is then len(timesteps) - 1 and must not be given as well.
    callback: called after every step as callback(info, first) with the batch's spritediff.samplers.StepInfo
    (x_t and x0_hat of samples first.. first+B-1, in model space) and first, the batch's first sample index.
    The caller's model is never moved or changed.
    Raises SpriteDiffError for any bad argument (before any work) and for a non-finite sample.
    """
    if timesteps is not None and isinstance(model, SpriteModel):  # else _check_arguments names the bad model
        if steps is not None:
            raise SpriteDiffError("give steps or timesteps, not both (a grid of k+1 points takes k steps)")
        timesteps = check_timesteps(timesteps, model.schedule.T)
        steps = len(timesteps) - 1
    plan = _check_arguments(model, sampler, steps, n, context, guidance, seed, device, batch_size, frames, out,
                            sampler_options)
    if timesteps is not None:
        plan["grid"] = {"timesteps": timesteps}
    guided = plan["contexts"] is not None and plan["guidance"] > 0  # both branches in one call: twice the rows
    # auto looks at the batch size asked for, not at n, so that sample i is the same whatever n is
    plan["precision"] = resolve_precision(precision, plan["device"],
                                          rows=plan["chosen_batch"] * (2 if guided else 1))
    plan["fast"] = bool(fast)
    if callback is not None and not callable(callback):
        raise SpriteDiffError(f"callback must be callable, got {type(callback).__name__}")
    plan["callback"] = callback
    return _run(model, plan, progress)


def _check_arguments(model, sampler, steps, n, context, guidance, seed, device, batch_size, frames, out,
                     options) -> dict:
    """Every argument of sample() checked and normalised, as one dict (the plan of the run)."""
    if not isinstance(model, SpriteModel):
        raise SpriteDiffError(f"model must be a SpriteModel (spritediff.load(...)), got {type(model).__name__}")
    if len(model.classes) != model.net.n_cfeat:
        raise SpriteDiffError(f"model has {len(model.classes)} class names for a net of {model.net.n_cfeat} context "
                              f"features")
    sampler, T = check_sampler(sampler), model.schedule.T
    steps = check_steps(DEFAULT_STEPS.get(sampler, T) if steps is None else check_int(steps, "steps"), T)
    n = check_int(n, "n", 1)
    plan = {"sampler": sampler, "steps": steps, "n": n, "guidance": check_guidance(guidance),
            "seed": check_seed(seed), "options": check_options(sampler, options), "device": resolve_device(device)}
    plan["contexts"] = _context_rows(context, model, n, plan["seed"])
    plan["context_label"] = context if isinstance(context, str) or context is None else "tensor"
    default_batch = BATCH_SIZE.get(plan["device"].type, 128)
    chosen = default_batch if batch_size is None else check_int(batch_size, "batch_size", 1, MAX_BATCH_SIZE)
    plan["batch_size"], plan["chosen_batch"] = min(n, chosen), chosen
    plan["frames"] = _frame_count(frames, n)
    plan["out"] = _check_out_array(out, n, model) if out is not None else _new_images(n, model)
    return plan


def _frame_count(frames, n: int) -> int:
    """How many samples keep their frames: True -> min(n, FRAMES_N), False -> 0, an int k -> min(n, k)."""
    if isinstance(frames, bool):
        return min(n, FRAMES_N) if frames else 0
    return min(n, check_int(frames, "frames", 0))


def _new_images(n: int, model: SpriteModel) -> np.ndarray:
    """An empty (n, H, W, C) uint8 array for the samples; a user error if memory cannot hold it."""
    shape = (n, model.net.height, model.net.height, model.net.in_channels)
    try:
        return np.empty(shape, np.uint8)
    except (MemoryError, ValueError):
        raise SpriteDiffError(f"n={n} samples need {math.prod(shape) / 1e9:.3g} GB, more than memory holds; pass "
                              f"out= a memory-mapped array (numpy.lib.format.open_memmap)") from None


def _check_out_array(out, n: int, model: SpriteModel) -> np.ndarray:
    shape = (n, model.net.height, model.net.height, model.net.in_channels)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.uint8 or not out.flags.writeable:
        got = f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', type(out).__name__)}"
        raise SpriteDiffError(f"out must be a writable {shape} uint8 array, got {got}")
    return out


def model_contexts(spec: str | None, model: SpriteModel, n: int, seed: int, start: int = 0) -> torch.Tensor | None:
    """(n, K) context rows of samples start..start+n-1 for a spec string, or None: parse_context with the model's
    classes and class mix, a drawn class ('random', 'mix') from sample i's stream (seed, i, 1)."""
    return parse_context(spec, model.classes, n, sample_generators(seed, n, stream=1, start=start), model.class_mix)


def _context_rows(context, model: SpriteModel, n: int, seed: int):
    """A function (lo, hi) -> (hi-lo, n_cfeat) float32 context of samples lo..hi-1, or None (no context).

    Checked here, before any work: a spec string's names and weights, or a tensor's shape and finiteness.
    """
    if context is None or isinstance(context, str):
        spec = (context or "").strip().lower()
        if spec in DRAWN and not model.classes:
            parse_context(spec, model.classes, 1)  # the one-line error of a model without classes
        if spec in DRAWN:
            if spec == "mix":
                check_mix_available(model.class_mix)
            return lambda lo, hi: model_contexts(spec, model, hi - lo, seed, start=lo)
        rows = parse_context(context, model.classes, 1)
        return None if rows is None else (lambda lo, hi: rows.expand(hi - lo, -1))
    return _tensor_context(context, model, n)


def _tensor_context(context, model: SpriteModel, n: int):
    if isinstance(context, np.ndarray) and np.issubdtype(context.dtype, np.number):
        context = torch.from_numpy(np.asarray(context, dtype=np.float32))
    if not isinstance(context, torch.Tensor) or context.is_complex() or context.dtype == torch.bool:
        raise SpriteDiffError(f"context must be a spec string, an (n, {model.net.n_cfeat}) tensor or None, "
                              f"got {type(context).__name__}")
    k = model.net.n_cfeat
    rows = context.detach().float().cpu()
    if rows.shape == (k,):
        rows = rows.expand(n, -1)
    if rows.shape != (n, k):
        raise SpriteDiffError(f"context tensor must have shape ({n}, {k}) (n, classes), got {tuple(context.shape)}")
    if not torch.isfinite(rows).all():
        raise SpriteDiffError("context tensor holds NaN or inf")
    return lambda lo, hi: rows[lo:hi]


def _run(model: SpriteModel, plan: dict, progress: bool) -> SampleResult:
    """Sample plan["n"] images batch by batch into one array; see sample()."""
    device, n, steps = plan["device"], plan["n"], plan["steps"]
    net = prepare_net(model.net, device, plan["fast"])
    images = plan["out"]
    kept, timesteps, nfe, seconds = [], [], 0, 0.0
    total = steps * math.ceil(n / plan["batch_size"])
    bar = tqdm(total=total, unit="step", leave=False) if progress else None
    for lo in range(0, n, plan["batch_size"]):
        hi = min(lo + plan["batch_size"], n)
        batch = _sample_batch(net, model, plan, lo, hi, bar)
        check_finite(batch.x0, lo, model.net, plan["guidance"], _rows(plan, lo, hi))
        images[lo:hi] = render.to_uint8(batch.x0)
        seconds += batch.clock.stop()
        kept = _merge_frames(kept, batch.frames)
        timesteps, nfe = timesteps or batch.timesteps, batch.nfe
    if bar is not None:
        bar.close()
    settings = {"sampler": plan["sampler"], "steps": steps, "n": n, "seed": plan["seed"],
                "guidance": plan["guidance"] if plan["contexts"] is not None else None,
                "context": plan["context_label"], "device": str(device), "batch_size": plan["batch_size"],
                "precision": plan["precision"], "fast": plan["fast"], **plan.get("grid", {}), **plan["options"]}
    return SampleResult(images, kept, timesteps, nfe, seconds, settings)


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


@dataclass
class BatchResult:
    """One batch: x0 (B,C,H,W) in model space, its kept frames and their timesteps, NFE per sample, and the
    clock started once the batch's eps function was ready."""

    x0: torch.Tensor
    frames: list
    timesteps: list
    nfe: int
    clock: Clock


def _rows(plan: dict, lo: int, hi: int) -> torch.Tensor | None:
    """The (hi-lo, K) context rows of samples lo..hi-1 on the CPU, or None (no context)."""
    return None if plan["contexts"] is None else plan["contexts"](lo, hi)


def _batch_eps(net, model: SpriteModel, plan: dict, lo: int, hi: int, x_T: torch.Tensor) -> CountingEps:
    """The counted eps function of samples lo..hi-1: context on the device, bf16 if asked, a CUDA graph if fast."""
    device = plan["device"]
    ctx = _rows(plan, lo, hi)
    ctx = None if ctx is None else ctx.to(device)
    eps_fn = Denoiser(net, model.schedule, ctx, plan["guidance"], bf16=plan["precision"] == "bf16",
                     prediction_type=model.prediction_type)
    if plan["fast"] and device.type == "cuda":
        eps_fn = graphed_or_eager(eps_fn, x_T)
    return CountingEps(eps_fn)


def _sample_batch(net, model: SpriteModel, plan: dict, lo: int, hi: int, bar) -> BatchResult:
    """Samples lo..hi-1, timed from the moment their eps function is ready (a CUDA graph's capture is set-up)."""
    generators = sample_generators(plan["seed"], hi - lo, start=lo)
    shape = (net.in_channels, net.height, net.height)
    x_T = initial_noise(generators, shape).to(plan["device"])
    eps_fn = _batch_eps(net, model, plan, lo, hi, x_T)
    keep = max(0, min(hi, plan["frames"]) - lo)  # rows of this batch that keep frames
    batch_frames, timesteps, user_callback = [], [], plan["callback"]

    def record(info: StepInfo) -> None:
        if bar is not None:
            bar.update(1)
        if keep:
            batch_frames.append((render.to_uint8(info.x_t[:keep]), render.to_uint8(info.x0_hat[:keep])))
            timesteps.append(info.t)
        if user_callback is not None:
            user_callback(info, lo)

    watched = keep or bar is not None or user_callback is not None
    clock = Clock(plan["device"])
    x0 = SAMPLERS[plan["sampler"]](eps_fn, x_T, model.schedule, steps=plan["steps"], generator=generators,
                                   callback=record if watched else None, **plan["options"], **plan.get("grid", {}))
    return BatchResult(x0, batch_frames, timesteps, eps_fn.calls, clock)


def _merge_frames(kept: list, batch_frames: list) -> list:
    """Append one batch's frames (per step) to the frames of the batches before it."""
    if not kept or not batch_frames:
        return kept or batch_frames
    return [(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])) for a, b in zip(kept, batch_frames)]
