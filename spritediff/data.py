"""Training data: the course's .npy files (as shipped, or the de-duplicated base set), or image folders.

On disk images are uint8 NHWC; `SpriteData.images` keeps them so, and `batch` converts a batch to
float NCHW in [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import COURSE_CLASSES
from .errors import SpriteDiffError
from .pixels import to_model_space

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
COURSE_TILES = 50  # the course's 89,400 rows are 1,788 base images tiled 50 times
MODEL_HEIGHTS = tuple(range(8, 65, 4))  # the image sizes ContextUnet takes: multiples of 4 from 8 to 64


@dataclass
class SpriteData:
    """images: (N,H,W,C) uint8; labels: (N,K) float32 context vectors or None; classes: K names."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B,C,H,W) float32 in [-1,1] and (B,K) labels (or None) for the given row indices."""
        x = to_model_space(self.images[indices])
        return x, None if self.labels is None else self.labels[indices]


def load_data(path: str | Path, labels: str | Path | None = None) -> SpriteData:
    """A folder of class subfolders, or an (N,H,W,3) uint8 .npy with an optional (N,K) one-hot .npy."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise SpriteDiffError(f"--data must be a path, got {path!r}")
    path = Path(path)
    if path.is_dir():
        if labels is not None:
            raise SpriteDiffError("--labels is for .npy data; an image folder's labels are its subfolders")
        return load_image_folder(path)
    return load_npy(path, Path(labels) if labels is not None else None)


def read_npy(path: Path, what: str) -> np.ndarray:
    """A .npy array without unpickling; a missing or damaged file is a one-line user error naming `what`."""
    if not path.is_file():
        raise SpriteDiffError(f"{what} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises many types for a damaged header (ValueError, SyntaxError, EOFError...)
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise SpriteDiffError(f"{what}: {path} is not a readable .npy array: {reason}") from None


def load_npy(path: Path, labels_path: Path | None) -> SpriteData:
    images = read_npy(path, "data")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise SpriteDiffError(f"{path}: expected (N,H,H,3) images, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise SpriteDiffError(f"{path}: expected uint8 pixels, got {images.dtype}")
    if len(images) == 0:
        raise SpriteDiffError(f"{path} holds no images")
    if labels_path is None:
        return SpriteData(torch.from_numpy(images), None, ())
    labels = read_npy(labels_path, "labels")
    if labels.ndim != 2 or len(labels) != len(images) or labels.shape[1] < 1:
        raise SpriteDiffError(f"{labels_path}: expected ({len(images)}, K) labels for {len(images)} images, "
                              f"got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.number) or np.iscomplexobj(labels) or not np.isfinite(labels).all() \
            or labels.min() < 0 or labels.max() > 1:
        raise SpriteDiffError(f"{labels_path}: labels must be numbers in [0, 1] (one-hot or soft class weights)")
    classes = COURSE_CLASSES if labels.shape[1] == len(COURSE_CLASSES) else tuple(f"class{i}" for i in range(labels.shape[1]))
    return SpriteData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.float32)), classes)


def load_image_folder(root: Path) -> SpriteData:
    """root/<class>/<image>: one-hot labels over the sorted subfolder names; all images one size, RGB."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(i, f) for i, d in enumerate(class_dirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise SpriteDiffError(f"{root} has no images in class subfolders (expected {root}/<class>/<image>.png)")
    arrays = [_read_image(f) for _, f in files]
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise SpriteDiffError(f"{root}: images differ in size ({', '.join(str(s[:2]) for s in sorted(sizes))})")
    (h, w, _), = sizes
    if h != w:
        raise SpriteDiffError(f"{root}: images must be square, got {h}x{w}")
    labels = torch.nn.functional.one_hot(torch.tensor([i for i, _ in files]), len(class_dirs)).float()
    return SpriteData(torch.from_numpy(np.stack(arrays)), labels, tuple(d.name.lower() for d in class_dirs))


def _read_image(path: Path) -> np.ndarray:
    """(H,W,3) uint8 pixels of one image file; a corrupt or unreadable file is a user error naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise SpriteDiffError(f"{path} is not a readable image: {reason}") from None


def base_set(images: np.ndarray, labels: np.ndarray | None = None):
    """The 1,788 base rows of the course's tiled (89,400) arrays; other arrays are returned as they are."""
    n = len(images)
    if n % COURSE_TILES or n == 0:
        return images, labels
    base = n // COURSE_TILES
    tiled = all(np.array_equal(images[:base], images[k * base:(k + 1) * base]) for k in range(1, COURSE_TILES))
    if not tiled:
        return images, labels
    return images[:base], None if labels is None else labels[:base]
