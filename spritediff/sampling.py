"""The notebook-level API, `spritediff.sample`: the edge that checks arguments into a SamplePlan for the engine.

Every argument is checked before any work; the plan is then run by spritediff.engine, which draws n samples in
batches of `batch_size`, so memory does not grow with n beyond the output array, which may be a memory-mapped
.npy file (`out=`). Only the first `frames` samples keep their denoising frames (for the GIF).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import SpriteModel
from .checks import check_guidance, check_int, check_seed, check_steps, check_timesteps
from .context import DRAWN, check_mix_available, parse_context
from .defaults import API_SAMPLE, DEFAULT_GUIDANCE
from .engine import (BATCH_SIZE, FRAMES_N, MAX_BATCH_SIZE, Engine, SamplePlan, SampleResult, resolve_device,
                     sample_generators, total_steps)
from .errors import SpriteDiffError
from .fast import resolve_precision
from .samplers import REGISTRY
from .specs import check_options, check_sampler

__all__ = ["sample", "plan_sample", "model_contexts", "SampleResult", "resolve_device"]


def sample(model: SpriteModel, sampler: str = API_SAMPLE.sampler, steps: int | None = API_SAMPLE.steps,
           n: int = 32, context: str | torch.Tensor | np.ndarray | None = API_SAMPLE.context,
           guidance: float | None = API_SAMPLE.guidance, seed: int = 0, device: str | torch.device | None = "cpu",
           batch_size: int | None = None, frames: bool | int = True, progress: bool = False, fast: bool = True,
           precision: str | torch.dtype = "auto", callback=None, out: np.ndarray | None = None,
           timesteps=None, **sampler_options) -> SampleResult:
    """Draw n samples, in batches of batch_size (default: BATCH_SIZE of the device, at most n).

    steps: model calls, 1..T (default: the sampler's, ddpm T, ddim 20). context: a spec string (see
    spritediff.context), an (n, n_cfeat) or (n_cfeat,) tensor or array, or None. guidance: w >= 0, finite, or None
    for the model's own (spritediff.defaults.DEFAULT_GUIDANCE; a distilled student's, baked into its weights).
    A distilled student (model.student) samples with its own sampler on its own grid: a sampler, steps, grid,
    option or guidance other than its own is a SpriteDiffError (spritediff.student).
    seed: 0..2^63-1; sample i uses noise stream (seed, i). frames: True keeps the denoising frames of the first
    FRAMES_N samples, an int k those of the first k, False none. out: an (n, H, W, 3) uint8 array (e.g. a
    memory-mapped .npy) to write the images into instead of a new one. sampler_options: the sampler's own
    keywords (spritediff.samplers.REGISTRY[sampler].options).
    fast: the fast path of spritediff.fast (BatchNorm folded; channels-last on the CPU; CUDA graphs on CUDA);
    False runs the net as stored. precision: "fp32" (exact and bit-reproducible), "bf16" (the net under bf16
    autocast) or "auto" (bf16 on a CPU with native bf16, else fp32); torch.float32 / torch.bfloat16 also work.
    timesteps: a custom grid instead of the sampler's own, e.g. [499, 300, 150, 50, 0] (strictly decreasing ints,
    the first <= T, the last 0); steps is then len(timesteps) - 1 and must not be given as well.
    callback: called after every step as callback(info, first) with the batch's spritediff.samplers.StepInfo
    (x_t and x0_hat of samples first.. first+B-1, in model space) and first, the batch's first sample index.
    The caller's model is never moved or changed. The defaults are spritediff.defaults.API_SAMPLE's.
    Raises SpriteDiffError for any bad argument (before any work) and for a non-finite sample.
    """
    plan = plan_sample(model, sampler, steps, n, context, guidance, seed, device, batch_size, frames, fast,
                       precision, timesteps, sampler_options)
    if callback is not None and not callable(callback):
        raise SpriteDiffError(f"callback must be callable, got {type(callback).__name__}")
    images = _check_out_array(out, n, model) if out is not None else _new_images(n, model)
    engine = Engine(model, plan.device, plan.fast, plan.precision)
    bar = tqdm(total=total_steps(plan), unit="step", leave=False) if progress else None
    try:
        return engine.sample(plan, images, callback, bar)
    finally:
        if bar is not None:
            bar.close()


def plan_sample(model: SpriteModel, sampler, steps, n, context, guidance, seed, device, batch_size, frames, fast,
                precision, timesteps=None, options=None) -> SamplePlan:
    """Every argument of sample() checked and normalised into the frozen plan of the run (before any work)."""
    if not isinstance(model, SpriteModel):
        raise SpriteDiffError(f"model must be a SpriteModel (spritediff.load(...)), got {type(model).__name__}")
    if len(model.classes) != model.net.n_cfeat:
        raise SpriteDiffError(f"model has {len(model.classes)} class names for a net of {model.net.n_cfeat} context "
                              f"features")
    T = model.schedule.T
    if model.student is not None:  # its own sampler and grid; its guidance is in its weights: the net runs unguided
        sampler, steps, timesteps, guidance, options = model.student.resolve(sampler, steps, timesteps, guidance,
                                                                             options or {})
    elif guidance is None:
        guidance = DEFAULT_GUIDANCE
    if timesteps is not None:
        if steps is not None:
            raise SpriteDiffError("give steps or timesteps, not both (a grid of k+1 points takes k steps)")
        timesteps = check_timesteps(timesteps, T)
        steps = len(timesteps) - 1
    sampler = check_sampler(sampler)
    steps = check_steps(REGISTRY[sampler].steps_for(T) if steps is None else check_int(steps, "steps"), T)
    n, seed, guidance = check_int(n, "n", 1), check_seed(seed), check_guidance(guidance)
    options = check_options(sampler, options or {})
    device = resolve_device(device)
    contexts = _context_rows(context, model, n, seed)
    chosen = BATCH_SIZE.get(device.type, 128) if batch_size is None else check_int(batch_size, "batch_size", 1,
                                                                                  MAX_BATCH_SIZE)
    guided = contexts is not None and guidance > 0  # both branches in one call: twice the rows
    # auto looks at the batch size asked for, not at n, so that sample i is the same whatever n is
    precision = resolve_precision(precision, device, rows=chosen * (2 if guided else 1))
    return SamplePlan(sampler=sampler, steps=steps, n=n, seed=seed, device=device, batch_size=min(n, chosen),
                      options=options, timesteps=timesteps, guidance=guidance, contexts=contexts,
                      context_label=context if isinstance(context, str) or context is None else "tensor",
                      frames=_frame_count(frames, n), precision=precision, fast=bool(fast), student=model.student)


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
