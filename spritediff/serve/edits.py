"""The edit panel's operations, run on a job thread through spritediff.latent's API.

The API gets a SpriteModel whose net is a BatchedNet (batcher.batched_model, as serve/runs.py gives the engine),
so an edit's model calls are merged with the other running requests' like any sample's; the results are the API's
own (InversionResult, InterpolationResult, EditResult).
"""
from __future__ import annotations

import numpy as np

from ..checkpoint import SpriteModel
from ..latent.api import edit, interpolate, invert
from .batcher import ModelBatcher, batched_model
from .images import GRID_SCALE, data_url
from .jobs import Job
from .results import ResultStore
from .validation import EditRequest


def run_edit(job: Job, request: EditRequest, model: SpriteModel, batcher: ModelBatcher, store: ResultStore) -> dict:
    """Run one edit operation; returns the "done" event: the grid, each result image, NFE, seconds, id."""
    proxy = batched_model(model, batcher, job.check)
    context = request.context.spec(model.classes)
    with batcher.participant():
        result, extra = OPERATIONS[request.op](proxy, request, context)
    name = f"{request.op}-{request.method}{request.steps}" if request.op in ("reconstruct", "interpolate") else \
        f"{request.op}-seed{request.seed}"
    return {"type": "done", "op": request.op, "id": store.put(result, name), "nfe": result.nfe,
            "seconds": round(result.seconds, 4), "grid": data_url(result.grid(scale=GRID_SCALE)),
            "images": [data_url(image) for image in result.images], **extra}


def _reconstruct(model: SpriteModel, request: EditRequest, context: str):
    """DDIM or exact (BDIA) inversion of the image, decoded again; extra: the mean squared error per pixel."""
    result = invert(model, request.image[None], steps=request.steps, method=request.method, context=context,
                    frames=True)
    return result, {"errors": [float(e) for e in result.errors], "method": request.method}


def _interpolate(model: SpriteModel, request: EditRequest, context: str):
    """Both images inverted, then slerp between their latents; extra: each frame's latent norm."""
    result = interpolate(model, images=np.stack([request.image, request.image_b]), frames=request.frames,
                         context=context, steps=request.steps, method=request.method)
    return result, {"norms": [round(float(v), 3) for v in result.norms]}


def _vary(model: SpriteModel, request: EditRequest, context: str):
    """SDEdit: noise to round(strength T), denoise with the context; extra: t0."""
    result = edit(model, request.image, strength=request.strength, context=context, n=request.n, seed=request.seed,
                  steps=request.steps, guidance=request.guidance)
    return result, {"t0": result.t0}


def _inpaint(model: SpriteModel, request: EditRequest, context: str):
    """Fill the mask's pixels (RePaint resampling); the other pixels stay the input's exactly."""
    result = edit(model, request.image, strength=request.strength, context=context, mask=request.mask, n=request.n,
                  seed=request.seed, steps=request.steps, guidance=request.guidance, resample=request.resample)
    return result, {"t0": result.t0}


OPERATIONS = {"reconstruct": _reconstruct, "interpolate": _interpolate, "vary": _vary, "inpaint": _inpaint}
