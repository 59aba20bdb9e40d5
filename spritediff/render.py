"""Images out: float NCHW in [-1, 1] -> uint8 NHWC, PNG grids and denoising GIFs (nearest upscaling)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .pixels import to_uint8  # noqa: F401 (re-exported: render's callers take it from here)


def tile(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N,H,W,C) uint8 -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) uint8 mosaic on a grey border.

    nrow: images per row (default 8), at most N (a row never holds empty cells only)."""
    n, h, w, c = images.shape
    nrow = min(nrow or 8, n)
    rows = math.ceil(n / nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 64, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, nrow)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = image
    return canvas


def upscale(image: np.ndarray, scale: int) -> Image.Image:
    """(H,W,C) uint8 -> PIL image scale times larger, nearest neighbour (a pixel stays a pixel)."""
    pil = Image.fromarray(image)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def grid_image(images: np.ndarray, nrow: int | None = None, scale: int = 4) -> Image.Image:
    """(N,H,W,C) uint8 -> PIL grid, upscaled by scale."""
    return upscale(tile(images, nrow), scale)


def denoise_frames(frames: Sequence[tuple[np.ndarray, np.ndarray]], nrow: int | None = None,
                   scale: int = 4, max_frames: int = 60) -> list[Image.Image]:
    """Frames of (x_t, x0_hat), each (N,H,W,C) uint8 -> PIL frames with x_t left, x0_hat right.

    Keeps at most max_frames, evenly spaced, always the last.
    """
    keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    pictures = []
    for i in keep:
        left, right = tile(frames[i][0], nrow), tile(frames[i][1], nrow)
        gap = np.full((left.shape[0], 4, left.shape[2]), 255, dtype=np.uint8)
        pictures.append(upscale(np.concatenate([left, gap, right], axis=1), scale))
    return pictures


def save_gif(pictures: Sequence[Image.Image], path, frame_ms: int = 80, hold_last_ms: int = 1500) -> None:
    """Write an endlessly looping GIF; the last frame is held longer."""
    durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
    pictures[0].save(path, format="GIF", save_all=True, append_images=list(pictures[1:]), duration=durations, loop=0,
                     optimize=False)
