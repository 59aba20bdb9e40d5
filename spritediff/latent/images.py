"""Inputs of the latent commands: sprite images (PNG files, folders, .npy), masks and labels, checked.

Images come back as (N,H,W,3) uint8, the course's layout; a bad input is a SpriteDiffError naming the argument.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data import read_npy
from ..errors import SpriteDiffError

PNG_SUFFIXES = {".png"}


def read_images(sources: Sequence[str | Path], size: int, what: str = "IMAGES") -> tuple[np.ndarray, list[str]]:
    """PNG files, folders of PNGs (sorted by name) or (N,H,W,3) uint8 .npy files -> (N,size,size,3) uint8 and names."""
    arrays, names = [], []
    for source in map(Path, sources):
        if source.suffix == ".npy":
            batch = read_npy_images(source, what)
            arrays.append(batch)
            names += [f"{source.name}[{i}]" for i in range(len(batch))]
        else:
            for file in png_files(source, what):
                arrays.append(read_png(file, what)[None])
                names.append(file.name)
    if not arrays:
        raise SpriteDiffError(f"{what}: no images given")
    images = np.concatenate([check_size(a, size, what) for a in arrays])
    return images, names


def png_files(source: Path, what: str) -> list[Path]:
    if source.is_dir():
        files = sorted(f for f in source.iterdir() if f.suffix.lower() in PNG_SUFFIXES)
        if not files:
            raise SpriteDiffError(f"{what}: folder {source} has no .png files")
        return files
    if not source.is_file():
        raise SpriteDiffError(f"{what}: file not found: {source}")
    return [source]


def read_png(path: Path, what: str) -> np.ndarray:
    """One RGB image (palette images without transparency too) -> (H,W,3) uint8; grey-scale or RGBA is an error."""
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise SpriteDiffError(f"{what}: {path} is not a readable image: {err}") from None
    if image.mode == "P" and "transparency" not in image.info:
        image = image.convert("RGB")
    if image.mode != "RGB":
        raise SpriteDiffError(f"{what}: {path} is {_mode_kind(image.mode)} (mode {image.mode}), not RGB; "
                              f"give RGB sprites (flatten transparency onto a black background)")
    return np.asarray(image, dtype=np.uint8)


def _mode_kind(mode: str) -> str:
    if mode in ("1", "L", "I", "I;16", "F"):
        return "grey-scale"
    if mode in ("LA", "RGBA", "P", "PA"):
        return "an image with transparency"
    return "not RGB"


def read_npy_images(path: Path, what: str) -> np.ndarray:
    images = read_npy(path, what)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise SpriteDiffError(f"{what}: {path} must hold (N,H,W,3) uint8 RGB images, got {images.dtype} {images.shape}")
    return images


def check_size(images: np.ndarray, size: int, what: str) -> np.ndarray:
    """images: (N,H,W,3); an error unless H = W = size (the model's; no resizing: a pixel stays a pixel)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise SpriteDiffError(f"{what}: expected (N,H,W,3) RGB images, got shape {images.shape}")
    if images.shape[1:3] != (size, size):
        raise SpriteDiffError(f"{what}: images are {images.shape[1]}x{images.shape[2]}, the model's are {size}x{size}")
    return images


def read_mask(source: str | Path | np.ndarray, size: int) -> np.ndarray:
    """A mask PNG (white = fill in, black = keep; any mode) or an (H,W) array -> (size,size) float32 of 0 and 1."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise SpriteDiffError(f"--mask: file not found: {path}")
        try:
            with Image.open(path) as image:
                mask = np.asarray(image.convert("L")) > 127
        except (UnidentifiedImageError, OSError) as err:
            raise SpriteDiffError(f"--mask: {path} is not a readable image: {err}") from None
    else:
        mask = np.asarray(source) > 0.5
    if mask.shape != (size, size):
        raise SpriteDiffError(f"--mask is {'x'.join(map(str, mask.shape))}, the image is {size}x{size}")
    if not mask.any():
        raise SpriteDiffError("--mask has no white pixels: nothing to fill in")
    return mask.astype(np.float32)


def read_labels(path: str | Path, n: int) -> np.ndarray:
    """(n,K) float labels for --context auto."""
    labels = read_npy(Path(path), "--labels")
    if labels.ndim != 2 or len(labels) != n or not np.issubdtype(labels.dtype, np.number):
        raise SpriteDiffError(f"--labels: expected ({n}, K) numbers for {n} images, got {labels.dtype} {labels.shape}")
    return labels.astype(np.float32)
