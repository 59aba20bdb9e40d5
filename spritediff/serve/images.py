"""Pictures over HTTP: uploaded PNGs (base64 data URLs, checked before they are decoded) in, PNG data URLs out.

Uploads are decoded from memory only; no client value is ever a file name. A PNG's size is read from its header
and checked against the model's sprite size before any pixel is decoded (no decompression bombs).
"""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import render
from ..errors import SpriteDiffError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URL_PREFIX = "data:image/png;base64,"
GRID_NROW = 8  # sprites per grid row, as spritediff sample's grid.png
GRID_SCALE = 4  # nearest-neighbour upscaling of grids and frames


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """A PIL image or an (H,W,3) uint8 array as PNG bytes."""
    picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: Image.Image | np.ndarray) -> str:
    """A PNG data URL ("data:image/png;base64,...") for the page's <img> elements."""
    return DATA_URL_PREFIX + base64.b64encode(png_bytes(image)).decode("ascii")


def grid_url(images: np.ndarray, nrow: int | None = GRID_NROW) -> str:
    """(N,H,W,3) uint8 -> the grid as a PNG data URL (nrow per row, upscaled GRID_SCALE times)."""
    return data_url(render.grid_image(images, nrow, GRID_SCALE))


def frame_url(x_t: np.ndarray, x0_hat: np.ndarray) -> str:
    """One denoising frame, x_t (N,H,W,3) left and x0_hat right, as in denoise.gif, as a PNG data URL at one
    pixel per sprite pixel (the page upscales it with nearest-neighbour CSS: 16x fewer bytes per frame)."""
    return data_url(render.denoise_frames([(x_t, x0_hat)], GRID_NROW, 1)[0])


def decode_upload(value, size: int, max_bytes: int, what: str, grey: bool = False) -> np.ndarray:
    """A base64 PNG (a data URL or bare base64) of exactly size x size RGB pixels -> (size,size,3) uint8.

    Fully opaque RGBA and palette images are accepted as RGB; transparency or grey-scale is a user error.
    grey: any mode, returned as (size,size) uint8 luminance (for masks).
    """
    data = _base64_payload(value, max_bytes, what)
    if not data.startswith(PNG_MAGIC):
        raise SpriteDiffError(f"{what} is not a PNG image")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if image.size != (size, size):
                raise SpriteDiffError(f"{what} is {image.size[0]}x{image.size[1]} pixels; the model's sprites are "
                                      f"{size}x{size} (no resizing: a pixel stays a pixel)")
            image.load()
            return np.array(image.convert("L"), dtype=np.uint8) if grey else _as_rgb(image, what)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SpriteDiffError(f"{what} is not a readable PNG: {' '.join(str(err).split())}") from None


def _base64_payload(value, max_bytes: int, what: str) -> bytes:
    """The bytes of a base64 string (data URL prefix optional), refused before decoding if too long."""
    if not isinstance(value, str):
        raise SpriteDiffError(f"{what} must be a PNG as a base64 data URL, got {type(value).__name__}")
    text = value[len(DATA_URL_PREFIX):] if value.startswith(DATA_URL_PREFIX) else value
    if value.startswith("data:") and not value.startswith(DATA_URL_PREFIX):
        raise SpriteDiffError(f"{what} must be a PNG data URL (data:image/png;base64,...)")
    if len(text) > 4 * (max_bytes // 3 + 1):
        raise SpriteDiffError(f"{what} is larger than the upload limit of {max_bytes // 1024} KiB")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SpriteDiffError(f"{what} is not valid base64") from None


def _as_rgb(image: Image.Image, what: str) -> np.ndarray:
    if image.mode == "P" and "transparency" not in image.info:
        image = image.convert("RGB")
    if image.mode == "RGBA" and image.getextrema()[3] == (255, 255):
        image = image.convert("RGB")
    if image.mode != "RGB":
        raise SpriteDiffError(f"{what} has mode {image.mode}, not RGB; give an RGB sprite (transparency flattened "
                              f"onto black)")
    return np.array(image, dtype=np.uint8)  # a writable copy (torch refuses to wrap read-only arrays)
