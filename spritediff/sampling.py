"""The notebook-level API: sample a SpriteModel with any registered sampler, per-sample noise streams."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import render
from .checkpoint import SpriteModel
from .context import parse_context
from .denoiser import DEFAULT_GUIDANCE, Denoiser
from .errors import SpriteDiffError
from .fast import CudaGraphEps, fold_batchnorm
from .rng import keyed_generator
from .samplers import DEFAULT_STEPS, SAMPLERS, StepInfo


@dataclass
class SampleResult:
    """images: (N,H,W,3) uint8; frames: per step (x_t, x0_hat), each (N,H,W,3) uint8; timesteps: t per frame.

    nfe: model calls per sample (a guided call counts once); seconds: wall time of the sampling loop.
    """

    images: np.ndarray
    frames: list = field(repr=False)
    timesteps: list
    nfe: int
    seconds: float
    settings: dict

    def grid(self, nrow: int | None = None, scale: int = 4) -> Image.Image:
        return render.grid_image(self.images, nrow, scale)

    def save_gif(self, path, nrow: int | None = None, scale: int = 4) -> None:
        if not self.frames:
            raise SpriteDiffError("this result kept no frames (sample(..., frames=True) keeps them)")
        final = (self.images, self.images)
        render.save_gif(render.denoise_frames(self.frames + [final], nrow, scale), path)


def check_options(sampler: str, options: dict) -> None:
    """A user error for an option the sampler does not take, or a negative eta."""
    from .specs import sampler_options

    known = sampler_options(sampler)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SpriteDiffError(f"{sampler} takes no option {', '.join(unknown)}; its options: {', '.join(known) or 'none'}")
    if options.get("eta", 0) < 0:
        raise SpriteDiffError(f"eta must be >= 0, got {options['eta']}")


def sample_generators(seed: int, n: int, stream: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (seed, index, stream), so sample i never depends on n."""
    return [keyed_generator(seed, i, stream) for i in range(n)]


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


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpriteDiffError("--device cuda asked for, but PyTorch sees no CUDA device here")
    try:
        return torch.device(device)
    except RuntimeError:
        raise SpriteDiffError(f"unknown device {device!r}; use cpu or cuda") from None


def sample(model: SpriteModel, sampler: str = "ddim", steps: int | None = None, n: int = 32,
           context: str | torch.Tensor | None = None, guidance: float = DEFAULT_GUIDANCE, seed: int = 0,
           device: str | None = "cpu", batch_size: int | None = None, frames: bool = True,
           progress: bool = False, fast: bool | None = None, **sampler_options) -> SampleResult:
    """Draw n samples. steps defaults to the sampler's (ddpm: T, ddim: 20).

    context: a spec string (see spritediff.context), an (n, n_cfeat) tensor, or None.
    sampler_options: the sampler's own keywords (eta, spacing, variance, ...).
    fast: fold BatchNorm into the convolutions and, on CUDA, replay each batch's model call from a
    captured CUDA graph (spritediff.fast); None means on for CUDA, off on the CPU.
    """
    if sampler not in SAMPLERS:
        raise SpriteDiffError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    steps = steps if steps is not None else DEFAULT_STEPS.get(sampler, model.schedule.T)
    if not 1 <= steps <= model.schedule.T:
        raise SpriteDiffError(f"steps must be between 1 and T={model.schedule.T}, got {steps}")
    if n < 1:
        raise SpriteDiffError(f"n must be at least 1, got {n}")
    if guidance < 0:
        raise SpriteDiffError(f"guidance must be >= 0, got {guidance}")
    check_options(sampler, sampler_options)
    device = resolve_device(device)
    fast = device.type == "cuda" if fast is None else fast
    net = model.net.to(device).eval()
    net = fold_batchnorm(net) if fast else net
    generators = sample_generators(seed, n)
    if isinstance(context, torch.Tensor):
        contexts = context.float()
    else:
        contexts = parse_context(context, model.classes, n, sample_generators(seed, n, stream=1))
    shape = (net.in_channels, net.height, net.height)
    batch_size = batch_size or n
    images, kept, timesteps, nfe = [], [], [], 0
    bar = tqdm(total=steps * -(-n // batch_size), disable=not progress or None, unit="step", leave=False)
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        ctx = None if contexts is None else contexts[lo:hi]
        x_T = initial_noise(generators[lo:hi], shape).to(device)
        eps_fn = Denoiser(net, model.schedule, ctx, guidance)
        eps_fn = CountingEps(CudaGraphEps(eps_fn, x_T) if fast and device.type == "cuda" else eps_fn)
        batch_frames: list = []

        def record(info: StepInfo) -> None:
            bar.update(1)
            if frames:
                batch_frames.append((render.to_uint8(info.x_t), render.to_uint8(info.x0_hat)))
                if lo == 0:
                    timesteps.append(info.t)

        x0 = SAMPLERS[sampler](eps_fn, x_T, model.schedule, steps=steps, generator=generators[lo:hi],
                               callback=record if frames or progress else None, **sampler_options)
        images.append(render.to_uint8(x0))
        kept = _merge_frames(kept, batch_frames)
        nfe = eps_fn.calls
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    bar.close()
    settings = {"sampler": sampler, "steps": steps, "n": n, "seed": seed, "guidance": guidance,
                "context": context if isinstance(context, str) or context is None else "tensor",
                "device": str(device), **sampler_options}
    return SampleResult(np.concatenate(images), kept, timesteps, nfe, seconds, settings)


def _merge_frames(kept: list, batch_frames: list) -> list:
    """Append one batch's frames (per step) to the frames of the batches before it."""
    if not kept:
        return batch_frames
    return [(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])) for a, b in zip(kept, batch_frames)]
