"""Images out: float NCHW in [-1, 1] -> uint8 NHWC, PNG grids and denoising GIFs (nearest upscaling).

RGBA (C = 4) sprites keep their transparency in grids (the border stays opaque grey); GIF frames are
flattened onto a grey-and-white checkerboard, as pixel-art editors show transparency, because GIF has
no partial transparency.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .pixels import to_uint8  # noqa: F401 (re-exported: render's callers take it from here)

BORDER = 64  # the grey between sprites in a grid
CHECKER = (255, 204)  # the two greys of the checkerboard under transparent sprites in a GIF
CHECKER_SQUARE = 8  # its squares' side, in output pixels


def solid(shape: tuple[int, int, int], grey: int) -> np.ndarray:
    """An (H,W,C) uint8 block of one grey, opaque (alpha 255) when C = 4."""
    block = np.full(shape, grey, dtype=np.uint8)
    if shape[2] == 4:
        block[..., 3] = 255
    return block


def tile(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """(N,H,W,C) uint8 -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) uint8 mosaic on an opaque grey border.

    nrow: images per row (default 8), at most N (a row never holds empty cells only)."""
    n, h, w, c = images.shape
    nrow = min(nrow or 8, n)
    rows = math.ceil(n / nrow)
    canvas = solid((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), BORDER)
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
    """Frames of (x_t, x0_hat), each (N,H,W,C) uint8 -> RGB PIL frames with x_t left, x0_hat right.

    Keeps at most max_frames, evenly spaced, always the last. RGBA sprites are shown on a checkerboard.
    """
    keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    pictures = []
    for i in keep:
        left, right = tile(frames[i][0], nrow), tile(frames[i][1], nrow)
        gap = solid((left.shape[0], 4, left.shape[2]), 255)
        pictures.append(on_checkerboard(upscale(np.concatenate([left, gap, right], axis=1), scale)))
    return pictures


def on_checkerboard(picture: Image.Image) -> Image.Image:
    """An RGBA picture flattened onto a checkerboard of CHECKER_SQUARE-pixel squares -> RGB; others as they are."""
    if picture.mode != "RGBA":
        return picture
    rows = np.arange(picture.height) // CHECKER_SQUARE % 2
    cols = np.arange(picture.width) // CHECKER_SQUARE % 2
    board = np.where(rows[:, None] == cols[None, :], np.uint8(CHECKER[0]), np.uint8(CHECKER[1]))  # (H,W) uint8
    background = Image.fromarray(np.dstack([board, board, board, np.full_like(board, 255)]))
    return Image.alpha_composite(background, picture).convert("RGB")


def save_gif(pictures: Sequence[Image.Image], path, frame_ms: int = 80, hold_last_ms: int = 1500) -> None:
    """Write an endlessly looping GIF; the last frame is held longer."""
    durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
    pictures[0].save(path, format="GIF", save_all=True, append_images=list(pictures[1:]), duration=durations, loop=0,
                     optimize=False)
