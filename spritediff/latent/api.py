"""The notebook-level latent API on a SpriteModel: invert, interpolate, edit. Each returns a result object
like spritediff.sample's SampleResult (images, frames, timesteps, nfe, seconds, settings, grid(), save_gif()).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .. import render
from ..checkpoint import SpriteModel
from ..context import DRAWN, parse_context
from ..defaults import DEFAULT_GUIDANCE
from ..errors import SpriteDiffError
from ..pixels import to_model_space, to_uint8
from ..engine import Engine, SampleResult, batch_ranges, merge_frames, resolve_device, sample_generators
from ..samplers import SAMPLERS
from ..checks import check_guidance, check_seed, check_steps
from ..sampling import model_contexts
from .editing import inpaint_ddim, noise_to, truncated_schedule
from .images import check_size, read_images, read_mask
from .inversion import invert_bdia, invert_ddim, sample_bdia
from .slerp import slerp

INTERPOLATE_STEPS = 20  # interpolate's decoding (and inverting) DDIM steps by default; a student decodes on its own
METHODS = ("ddim", "exact")  # exact: BDIA-DDIM with gamma = 1 (spritediff.latent.inversion)


@dataclass
class InversionResult(SampleResult):
    """images: (N,H,W,3) uint8 reconstructions, decoded from the latents; inputs: (N,H,W,3) uint8.

    latents: (N,C,H,W) x_T; latents_t1: (N,C,H,W) x at the grid's second time t_1 (method exact; None for ddim);
    errors: (N,) float64 mean squared error per pixel on the [0, 1] scale, input against the float reconstruction.
    nfe: model calls per image, encoding plus decoding.
    """

    inputs: np.ndarray = None
    latents: torch.Tensor = None
    latents_t1: torch.Tensor | None = None
    errors: np.ndarray = None

    def grid(self, nrow: int | None = None, scale: int = 4) -> Image.Image:
        """Input beside reconstruction, pairs side by side (nrow images per row, default 8 = 4 pairs)."""
        pairs = np.stack([self.inputs, self.images], axis=1).reshape(-1, *self.images.shape[1:])
        return render.grid_image(pairs, nrow or min(len(pairs), 8), scale)


@dataclass
class InterpolationResult(SampleResult):
    """images: (K,H,W,3) uint8 frames along the slerp path; alphas: (K,) positions in [0, 1];
    latents: (K,C,H,W) the interpolated x_T; norms: (K,) their norms (sqrt(d) for a typical N(0, I) latent).
    seconds: inverting the images (invert_seconds) and decoding every frame."""

    alphas: np.ndarray = None
    latents: torch.Tensor = None
    norms: np.ndarray = None
    invert_seconds: float = 0.0  # the part of `seconds` spent inverting the two images (0 from seeds)

    def grid(self, nrow: int | None = None, scale: int = 4) -> Image.Image:
        """The strip: all frames in one row (or nrow per row)."""
        return render.grid_image(self.images, nrow or len(self.images), scale)

    def save_gif(self, path, nrow: int | None = None, scale: int = 8) -> None:
        """A GIF that plays the frames forth and back, endlessly."""
        order = list(range(len(self.images))) + list(range(len(self.images) - 2, 0, -1))
        pictures = [render.upscale(self.images[i], scale) for i in order]
        pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=150, loop=0)


@dataclass
class EditResult(SampleResult):
    """images: (n,H,W,3) uint8 edits of one input (H,W,3); mask: (H,W) 1 = filled in, or None; t0: start time.
    frames: (x_t, x0_hat) per step of the run, as in SampleResult."""

    input: np.ndarray = None
    mask: np.ndarray | None = None
    t0: int = 0

    def grid(self, nrow: int | None = None, scale: int = 4) -> Image.Image:
        """The input (and, with a mask, the input with the hole in grey), then the results."""
        shown = [self.input[None]]
        if self.mask is not None:
            holed = self.input.copy()
            holed[self.mask > 0.5] = 128
            shown.append(holed[None])
        everything = np.concatenate(shown + [self.images])
        return render.grid_image(everything, nrow or min(len(everything), 10), scale)


def working_engine(model: SpriteModel, device: str | None, dtype: torch.dtype = torch.float32) -> Engine:
    """The engine on a copy of the model's net (the caller's net keeps its device, mode and weights): in float32
    spritediff.sample's fast path in fp32, in float64 the plain net (the exact method's floor); a stand-in net
    (the server's BatchedNet) as is."""
    return Engine(model, resolve_device(device), fast=True, precision="fp32", dtype=dtype)


def resolve_contexts(model: SpriteModel, context, n: int, labels=None) -> torch.Tensor | None:
    """(n, K) float context or None. context: 'auto' (labels if given, else none), a spec string, a tensor."""
    if isinstance(context, torch.Tensor):
        return context.float().expand(n, -1) if context.dim() == 1 else context.float()
    if context is not None and context.strip().lower() == "auto":
        return None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    return model_contexts(context, model, n, seed=0)


def check_rgb(model: SpriteModel) -> None:
    """The latent tools read and write RGB sprites: an RGBA model is a one-line user error."""
    if model.net.in_channels != 3:
        raise SpriteDiffError(f"the latent tools (invert, interpolate, edit) take RGB models; this model makes "
                              f"{model.net.in_channels}-channel images")


def refuse_student(model: SpriteModel, what: str, why: str) -> None:
    """A one-line SpriteDiffError where a latent tool cannot run a distilled student: it knows its own grid only."""
    if model.student is not None:
        raise SpriteDiffError(f"{what}: this model is {model.student.describe()}, which only knows its own grid's "
                              f"jumps downwards; {why}. Use its teacher ({model.student.teacher.get('model', '?')})")


INVERSION_ON_A_STUDENT = ("inversion needs the net's eps for jumps upwards, which a student never learnt (its eps "
                          "at a time is the one for its next jump down)")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise SpriteDiffError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")


def as_images(images, model: SpriteModel, what: str = "IMAGES") -> tuple[np.ndarray, list[str]]:
    """(N,H,W,3) uint8 from an array, one path or a list of paths (PNG, folder, .npy), checked against the model."""
    check_rgb(model)
    size = model.net.height
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise SpriteDiffError(f"{what}: expected uint8 pixels, got {images.dtype}")
        batch = images[None] if images.ndim == 3 else images
        return check_size(batch, size, what), [f"image{i}" for i in range(len(batch))]
    sources = [images] if isinstance(images, (str, Path)) else list(images)
    return read_images(sources, size, what)


def encode(eps_fn, x0: torch.Tensor, model: SpriteModel, steps: int, method: str):
    """x0 (B,C,H,W) -> (x_T, x_t1 or None) with the given method."""
    if method == "ddim":
        return invert_ddim(eps_fn, x0, model.schedule, steps), None
    return invert_bdia(eps_fn, x0, model.schedule, steps)


def decode(eps_fn, z: torch.Tensor, z1: torch.Tensor | None, model: SpriteModel, steps: int, callback=None):
    """(x_T, x_t1 or None) -> x0: DDIM from x_T alone, BDIA from the exact method's pair."""
    if z1 is None:
        return SAMPLERS["ddim"](eps_fn, z, model.schedule, steps=steps, callback=callback)
    return sample_bdia(eps_fn, z, model.schedule, steps, x_t1=z1, callback=callback)


class FrameRecorder:
    """A sampler callback that keeps (x_t, x0_hat) as uint8 per step, and the timesteps."""

    def __init__(self):
        self.frames, self.timesteps = [], []

    def __call__(self, info) -> None:
        self.frames.append((to_uint8(info.x_t), to_uint8(info.x0_hat)))
        self.timesteps.append(info.t)


def invert(model: SpriteModel, images, steps: int = 50, method: str = "ddim", context="auto", labels=None,
           guidance: float = 0.0, device: str | None = "cpu", dtype: torch.dtype = torch.float32,
           batch_size: int = 256, frames: bool = False) -> InversionResult:
    """Encode images to DDIM latents and decode them again.

    images: (N,H,W,3) uint8, a path or paths (PNG files, folders, .npy). method: 'ddim' (approximate, error
    falls with steps) or 'exact' (BDIA: float precision at any steps; its latent is the pair x_T, x_t1).
    context: 'auto' (labels (N,K) if given, else none), a spec, or an (N,K) tensor; guidance 0 keeps the
    model's own ODE (w > 0 inverts the guided one). dtype: float32, or float64 to see the exact method's floor.
    """
    refuse_student(model, "invert", INVERSION_ON_A_STUDENT)
    check_method(method)
    check_steps(steps, model.schedule.T, "--steps")
    check_rgb(model)
    guidance = check_guidance(guidance, "--guidance")
    pixels, names = as_images(images, model)
    if labels is not None and len(labels) != len(pixels):
        raise SpriteDiffError(f"--labels has {len(labels)} rows for {len(pixels)} images")
    contexts = resolve_contexts(model, context, len(pixels), labels)
    engine = working_engine(model, device, dtype)
    device = engine.device
    latents, latents_t1, recon, errors, kept, timesteps = [], [], [], [], [], []
    start = time.perf_counter()
    for lo, hi in batch_ranges(0, len(pixels), batch_size):
        x0 = to_model_space(pixels[lo:hi]).to(device=device, dtype=dtype)
        eps_fn = engine.eps(None if contexts is None else contexts[lo:hi], guidance)
        z, z1 = encode(eps_fn, x0, model, steps, method)
        recorder = FrameRecorder() if frames else None
        x = decode(eps_fn, z, z1, model, steps, recorder)
        if recorder is not None:
            kept, timesteps = merge_frames(kept, recorder.frames), recorder.timesteps
        latents.append(z.float().cpu())
        latents_t1.append(None if z1 is None else z1.float().cpu())
        recon.append(to_uint8(x))
        errors.append((((x - x0) / 2) ** 2).flatten(1).mean(1).double().cpu().numpy())
    seconds = time.perf_counter() - start
    settings = {"method": method, "steps": steps, "n": len(pixels), "guidance": guidance, "dtype": str(dtype),
                "context": context if isinstance(context, str) or context is None else "tensor",
                "device": str(device), "names": names}
    return InversionResult(np.concatenate(recon), kept, timesteps, eps_fn.calls, seconds, settings, pixels,
                           torch.cat(latents), None if method == "ddim" else torch.cat(latents_t1),
                           np.concatenate(errors))


def _two_contexts(model: SpriteModel, context) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """context: None, one spec for both ends, or a pair of specs -> two (1, K) contexts or None each."""
    if context is None or isinstance(context, str):
        context = (context, context)
    if len(context) != 2:
        raise SpriteDiffError(f"--context takes one class for both ends or two (C1 C2), got {len(context)}")
    for c in context:
        if isinstance(c, str) and c.strip().lower() in DRAWN:
            raise SpriteDiffError(f"context {c.strip()!r} draws a class per sample; each end of an interpolation "
                                  f"takes a class, a blend like 'hero=1,food=0.6' or none")
    return tuple(parse_context(c, model.classes, 1) for c in context)


def _blend(c_a: torch.Tensor | None, c_b: torch.Tensor | None, alphas: torch.Tensor) -> torch.Tensor | None:
    """(K, n_classes) contexts (1 - a) c_a + a c_b for alphas (K,), or None where neither end has one."""
    if c_a is None and c_b is None:
        return None
    zero = (c_a if c_a is not None else c_b) * 0
    c_a, c_b = (c if c is not None else zero for c in (c_a, c_b))
    return (1 - alphas.float())[:, None] * c_a + alphas.float()[:, None] * c_b


def _ends_from_seeds(engine: Engine, seeds: Sequence[int]) -> torch.Tensor:
    """(2,C,H,W) on the engine's device: the x_T that spritediff.sample draws for sample 0 with each seed."""
    if len(seeds) != 2:
        raise SpriteDiffError(f"--seeds takes two seeds, got {len(seeds)}")
    seeds = [check_seed(s, "--seeds") for s in seeds]
    return torch.cat([engine.noise(s, 0, 1)[1] for s in seeds])


def _ends_from_images(engine: Engine, images, contexts, guidance: float, steps: int, method: str):
    """Two sprites inverted, each with its own context: ((2,C,H,W) x_T, (2,C,H,W) x_t1 or None, names)."""
    pixels, names = as_images(images, engine.model)
    if len(pixels) != 2:
        raise SpriteDiffError(f"--images takes exactly two images to interpolate, got {len(pixels)}")
    eps_fn = engine.eps(contexts, guidance)
    return (*encode(eps_fn, to_model_space(pixels).to(engine.device), engine.model, steps, method), names)


def interpolate(model: SpriteModel, seeds: Sequence[int] | None = None, images=None, frames: int = 8, context=None,
                steps: int | None = None, method: str = "ddim", guidance: float | None = None,
                device: str | None = "cpu") -> InterpolationResult:
    """Slerp between two latents and decode each frame with DDIM (or BDIA for the exact method's pairs).

    seeds (A, B): the x_T of spritediff.sample(seed=A) and (seed=B), sample 0; images (a, b): two sprites,
    inverted with `method` at `steps` (default INTERPOLATE_STEPS). context: one spec for both ends or (C1, C2),
    blended linearly along the path. guidance: default 0.5 (sample's) from seeds, 0 from images (so that the ends
    reconstruct the images). A distilled student interpolates from seeds only, decoding on its own grid with its
    own guidance (the ends are then its spritediff.sample(seed=A) and (seed=B)); images would need inversion.
    """
    if (seeds is None) == (images is None):
        raise SpriteDiffError("give either --seeds A B or --images a.png b.png")
    if frames < 2:
        raise SpriteDiffError(f"--frames must be at least 2, got {frames}")
    grid, student = None, model.student
    if student is not None:
        if images is not None:
            refuse_student(model, "interpolate --images", INVERSION_ON_A_STUDENT + "; --seeds works")
        _, _, grid, net_guidance, _ = student.resolve(student.sampler, steps, None, guidance, {})
        steps = student.calls
    else:
        steps = INTERPOLATE_STEPS if steps is None else steps
        check_steps(steps, model.schedule.T, "--steps")
    check_rgb(model)
    check_method(method)
    if student is not None:
        guidance = net_guidance  # its own is in its weights: the net runs unguided
    else:
        guidance = (DEFAULT_GUIDANCE if seeds is not None else 0.0) if guidance is None else guidance
    guidance = check_guidance(guidance, "--guidance")
    c_a, c_b = _two_contexts(model, context)
    engine = working_engine(model, device)
    device, shape = engine.device, engine.shape
    invert_start = time.perf_counter()
    if seeds is not None:
        ends, ends_t1, settings = _ends_from_seeds(engine, seeds), None, {"seeds": list(seeds)}
    else:
        ends, ends_t1, names = _ends_from_images(engine, images, _blend(c_a, c_b, torch.tensor([0.0, 1.0])),
                                                 guidance, steps, method)
        settings = {"images": names, "method": method}
    alphas = torch.linspace(0, 1, frames, dtype=torch.float64)
    path = slerp(ends[:1].expand(frames, *shape), ends[1:].expand(frames, *shape), alphas.to(ends.dtype))
    path_t1 = None if ends_t1 is None else slerp(ends_t1[:1].expand(frames, *shape),
                                                 ends_t1[1:].expand(frames, *shape), alphas.to(ends.dtype))
    eps_fn = engine.eps(_blend(c_a, c_b, alphas), guidance)
    recorder = FrameRecorder()
    start = time.perf_counter()
    invert_seconds = start - invert_start if images is not None else 0.0
    if grid is not None:  # a student: DDIM on its own grid
        x = SAMPLERS[student.sampler](eps_fn, path, model.schedule, timesteps=grid, callback=recorder)
    else:
        x = decode(eps_fn, path, path_t1, model, steps, recorder)
    seconds = time.perf_counter() - start + invert_seconds
    settings.update({"frames": frames, "steps": steps, "guidance": guidance, "context": context,
                     "device": str(device)})
    if student is not None:
        settings.update(guidance=student.guidance, timesteps=list(grid),
                        student={"calls": student.calls, "guidance": student.guidance, "teacher": student.teacher})
    norms = path.flatten(1).norm(dim=1).cpu().numpy()
    return InterpolationResult(to_uint8(x), recorder.frames, recorder.timesteps, eps_fn.calls, seconds, settings,
                               alphas.numpy(), path.cpu(), norms, invert_seconds)


def edit_steps(steps: int, t0: int, T: int) -> int:
    """Model calls for a run from t0: the share t0 / T of `steps`, at least 1, at most t0."""
    return min(t0, max(1, round(steps * t0 / T)))


REPAINT_DEFAULT = 5  # resamples per step with a mask: measured on the oracle, benchmarks/inpainting_oracle.py


def edit(model: SpriteModel, image, strength: float | None = None, context=None, mask=None, n: int = 4,
         seed: int = 0, steps: int = 50, guidance: float = DEFAULT_GUIDANCE, device: str | None = "cpu",
         resample: int | None = None) -> EditResult:
    """SDEdit variations or class changes of one sprite, or inpainting with a mask.

    image: (H,W,3) uint8 or a PNG path. strength in [0, 1]: noise to t0 = round(strength T) and denoise from
    there with DDIM (default 0.6, or 1 with a mask); 0 returns the input, 1 is plain sampling from the same
    noise (spritediff.sample with this seed). context: the class to draw (a spec, as in sample). mask: (H,W)
    array or PNG, white (1) = fill in; the other pixels stay the input's exactly. steps: DDIM steps over the
    whole range 0..T, so a run from t0 takes round(steps t0 / T). Result i uses noise stream (seed, i).
    resample: RePaint's resampling with a mask, R model calls per step (default 5; 1 = plain replacement).
    """
    refuse_student(model, "edit", "SDEdit and inpainting run DDIM from t0 = strength T on a grid of their own (and "
                   "RePaint jumps back up), not the student's")
    seed, guidance = check_seed(seed, "--seed"), check_guidance(guidance, "--guidance")
    pixels, _ = as_images(image, model, "IMAGE")
    if len(pixels) != 1:
        raise SpriteDiffError(f"IMAGE: edit takes one image, got {len(pixels)}")
    strength, resample = _edit_options(strength, mask is not None, n, guidance, resample)
    check_steps(steps, model.schedule.T, "--steps")
    check_rgb(model)
    holes = None if mask is None else read_mask(mask, model.net.height)
    contexts = model_contexts(context, model, n, seed)
    engine = working_engine(model, device)
    device = engine.device
    t0 = round(strength * model.schedule.T)
    settings = {"strength": strength, "t0": t0, "n": n, "seed": seed, "guidance": guidance, "context": context,
                "mask": holes is not None, "resample": resample, "device": str(device)}
    x = to_model_space(np.repeat(pixels, n, axis=0)).to(device)
    if t0 == 0:
        return EditResult(to_uint8(x), [], [], 0, 0.0, {**settings, "steps": 0}, pixels[0], holes, t0)
    k = edit_steps(steps, t0, model.schedule.T)
    eps_fn = engine.eps(contexts, guidance)
    recorder = FrameRecorder()
    start = time.perf_counter()
    out = _denoise_from(engine, eps_fn, x, t0, k, holes, seed, resample, recorder)
    seconds = time.perf_counter() - start
    return EditResult(to_uint8(out), recorder.frames, recorder.timesteps, eps_fn.calls, seconds,
                      {**settings, "steps": k}, pixels[0], holes, t0)


def _edit_options(strength: float | None, masked: bool, n: int, guidance: float, resample: int | None):
    """Defaults and checks of edit's options: (strength, resample)."""
    strength = (1.0 if masked else 0.6) if strength is None else strength
    if not 0.0 <= strength <= 1.0:  # also false for NaN
        raise SpriteDiffError(f"--strength must be between 0 and 1, got {strength}")
    if n < 1:
        raise SpriteDiffError(f"--n must be at least 1, got {n}")
    guidance = check_guidance(guidance, "--guidance")
    resample = (REPAINT_DEFAULT if masked else 1) if resample is None else resample
    if resample < 1 or (resample > 1 and not masked):
        raise SpriteDiffError(f"--resample must be at least 1 and applies to inpainting (--mask), got {resample}")
    return strength, resample


def _denoise_from(engine: Engine, eps_fn, x: torch.Tensor, t0: int, steps: int, holes: np.ndarray | None,
                  seed: int, resample: int, callback) -> torch.Tensor:
    """Noise x (n,C,H,W) to t0 with streams (seed, i) and denoise: DDIM, or inpainting where holes (H,W) is 1."""
    n = len(x)
    model = engine.model
    x_t0 = noise_to(x, engine.noise(seed, 0, n)[1], model.schedule, t0)
    schedule = truncated_schedule(model.schedule, t0)
    if holes is None:
        return SAMPLERS["ddim"](eps_fn, x_t0, schedule, steps=steps, callback=callback)
    mask = torch.from_numpy(holes).to(x.device)[None, None]
    return inpaint_ddim(eps_fn, x_t0, schedule, steps, x, mask, sample_generators(seed, n, stream=2), callback,
                        resample)
