"""Training data: the course's .npy files (as shipped, or the de-duplicated base set), or image folders.

On disk images are uint8 NHWC, RGB or RGBA (straight alpha); `SpriteData.images` keeps them so
(the trainer converts batches with `pixels.to_model_space`). Channels: `auto` keeps an array's own
3 or 4 and makes a folder RGBA when any pixel of any image is not fully opaque (its opaque images
then get alpha 255), RGB otherwise; 3 flattens transparency onto black (the course sprites'
background); 4 gives RGB images alpha 255. A fully transparent pixel's colour is invisible, so it
is stored as 0 (black): the model does not learn colours nobody sees.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .sprites import COURSE_CLASSES, generic_class_names
from .errors import SpriteDiffError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
COURSE_TILES = 50  # the course's 89,400 rows are 1,788 base images tiled 50 times
COURSE_BASE = 1788
MODEL_HEIGHTS = tuple(range(8, 65, 4))  # the image sizes ContextUnet takes: multiples of 4 from 8 to 64
CHANNELS = ("auto", 3, 4)  # what --channels takes
CHANNEL_NAMES = {3: "RGB", 4: "RGBA"}


def image_kind(height: int, channels: int) -> str:
    """The images a model or a data set holds, for messages: "32x32 RGBA"."""
    return f"{height}x{height} {CHANNEL_NAMES.get(channels, f'{channels}-channel')}"


@dataclass
class SpriteData:
    """images: (N,H,W,C) uint8, C = 3 (RGB) or 4 (RGBA); labels: (N,K) float32 context vectors or None;
    classes: K names."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)


def load_data(path: str | Path, labels: str | Path | None = None, channels: str | int = "auto") -> SpriteData:
    """A folder of images (one subfolder per class, or the images themselves: no labels), or an (N,H,W,3|4) uint8
    .npy with an optional (N,K) one-hot .npy; channels: "auto", 3 or 4 (see the module docstring)."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise SpriteDiffError(f"--data must be a path, got {path!r}")
    if channels != "auto" and (isinstance(channels, bool) or not isinstance(channels, int) or channels not in CHANNELS):
        raise SpriteDiffError(f"--channels must be auto, 3 (RGB) or 4 (RGBA), got {channels!r}")
    path = Path(path)
    if path.is_dir():
        if labels is not None:
            raise SpriteDiffError("--labels is for .npy data; an image folder's labels are its subfolders")
        data = load_image_folder(path)
    else:
        data = load_npy(path, Path(labels) if labels is not None else None)
        channels = data.images.shape[-1] if channels == "auto" else channels  # an array keeps its own channels
    images = with_channels(data.images.numpy(), channels)
    return SpriteData(torch.from_numpy(images), data.labels, data.classes)


def with_channels(images: np.ndarray, channels: str | int = "auto") -> np.ndarray:
    """(N,H,W,3|4) uint8 -> (N,H,W,C) uint8 with C = channels ("auto": 4 if any alpha is below 255, else 3).

    4 -> 3 composites onto black (RGB x alpha / 255, rounded); 3 -> 4 appends alpha 255; RGBA output has
    the colour of fully transparent pixels set to 0."""
    has_alpha = images.shape[-1] == 4
    if channels == "auto":
        channels = 4 if has_alpha and (images[..., 3] < 255).any() else 3
    if not has_alpha:
        if channels == 3:
            return images
        return np.concatenate([images, np.full(images.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
    if channels == 3:
        flat = images[..., :3].astype(np.uint16) * images[..., 3:] + 127  # + 127: rounds the division by 255
        return (flat // 255).astype(np.uint8)
    return np.where(images[..., 3:] == 0, np.uint8(0), images)


def read_npy(path: Path, what: str) -> np.ndarray:
    """A .npy array without unpickling; a missing or damaged file is a one-line user error naming `what`."""
    if not path.is_file():
        raise SpriteDiffError(f"{what} file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises many types for a damaged header (ValueError, SyntaxError, EOFError...)
        reason = ("it holds Python objects, which spritediff never unpickles" if is_npy(path) and "allow_pickle" in
                  str(err) else "a .npy file, but a damaged one" if is_npy(path) else "not a .npy file at all")
        # numpy's own text advises loading unsafely, so it is never passed on
        accepted = "an (N,H,W,C) uint8 .npy or a folder of images" if what == "data" else "a numeric .npy array"
        raise SpriteDiffError(f"{what}: {path} is not a readable .npy array ({reason}); give {accepted}") from None


def is_npy(path: Path) -> bool:
    """Whether the file starts with the .npy magic string."""
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"


def load_npy(path: Path, labels_path: Path | None) -> SpriteData:
    """(N,H,H,3) RGB or (N,H,H,4) RGBA uint8 images, as they are, and their optional (N,K) labels."""
    images = read_npy(path, "data")
    if images.ndim != 4 or images.shape[-1] not in CHANNEL_NAMES or images.shape[1] != images.shape[2]:
        raise SpriteDiffError(f"{path}: expected (N,H,H,3) RGB or (N,H,H,4) RGBA images, got shape {images.shape}")
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
    classes = COURSE_CLASSES if is_course_labels(labels) else generic_class_names(labels.shape[1])
    return SpriteData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.float32)), classes)


def load_image_folder(root: Path) -> SpriteData:
    """root/<class>/<image>: one-hot labels over the sorted subfolder names; without class subfolders,
    root/<image>: no labels. All images one square size; (N,H,H,4) RGBA as read (alpha 255 where a file has none)."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(i, f) for i, d in enumerate(class_dirs) for f in _image_files(d)]
    if files:
        labels = torch.nn.functional.one_hot(torch.tensor([i for i, _ in files]), len(class_dirs)).float()
        return SpriteData(_read_images(root, [f for _, f in files]), labels, tuple(d.name.lower() for d in class_dirs))
    files = _image_files(root)
    if not files:
        raise SpriteDiffError(f"{root} has no images (expected {root}/<image>.png, or {root}/<class>/<image>.png "
                              f"for a context model)")
    return SpriteData(_read_images(root, files), None, ())


def _read_images(root: Path, files: list[Path]) -> torch.Tensor:
    """(N,H,H,4) uint8 RGBA of the files, which must all be one square size (root is named in the error)."""
    arrays = [_read_image(f) for f in files]
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise SpriteDiffError(f"{root}: images differ in size ({', '.join(str(s[:2]) for s in sorted(sizes))})")
    (h, w, _), = sizes
    if h != w:
        raise SpriteDiffError(f"{root}: images must be square, got {h}x{w}")
    return torch.from_numpy(np.stack(arrays))


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in folder (by suffix, hidden files skipped), sorted by name."""
    return [f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            and not f.name.startswith(".")]


def _read_image(path: Path) -> np.ndarray:
    """(H,W,4) uint8 RGBA pixels of one image file (alpha 255 where the file has none); a corrupt or unreadable
    file is a user error naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGBA"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise SpriteDiffError(f"{path} is not a readable image: {reason}") from None


COURSE_SPRITES_SHA256 = "0e579a20b0aeb42d628c25101d2d86d459be74b904301992ba211796e90995c8"  # its 1,788 base sprites


def is_course_sprites(images: np.ndarray) -> bool:
    """Whether images (N,H,W,C) uint8 are the course's sprites: its 1,788 base sprites, or its tiled 89,400-row file,
    identified by content (SHA-256 of the (1788,16,16,3) base rows in file order)."""
    base, _ = base_set(images)
    return base.shape == (1788, 16, 16, 3) and hashlib.sha256(np.ascontiguousarray(base).tobytes()).hexdigest() \
        == COURSE_SPRITES_SHA256


COURSE_LABELS_SHA256 = "e50383d25c40c7e37859eabc95a759197a95bc5b5e84c1b33a5e08fd61f95439"  # its 1,788 base labels


def is_course_labels(labels: np.ndarray) -> bool:
    """Whether (N,K) labels are the course's labels file (or its 1,788 base rows), identified by content (SHA-256
    of the (1788,5) float64 base rows): only then are the columns hero, non-hero, food, spell, side-facing."""
    n = len(labels)
    if labels.shape[1:] != (len(COURSE_CLASSES),) or n not in (COURSE_BASE, COURSE_BASE * COURSE_TILES):
        return False
    base = labels[:COURSE_BASE]
    if any(not np.array_equal(base, labels[k:k + COURSE_BASE]) for k in range(COURSE_BASE, n, COURSE_BASE)):
        return False
    return hashlib.sha256(np.ascontiguousarray(base, np.float64).tobytes()).hexdigest() == COURSE_LABELS_SHA256


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
