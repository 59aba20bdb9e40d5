"""Controlled damage to sprites, to check that a quality metric sees it (as Heusel et al. 2017, Fig. 1).

Each disturbance maps (N,H,W,C) uint8 images and a level in [0, 1] to damaged images of the same
shape; level 0 returns the images unchanged and larger levels damage more. Draws come from
`keyed_generator(seed, index)`, so image i is damaged the same way whatever N is.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .rng import keyed_generator

PALETTE_BIN = 32  # levels (0..255) per channel that count as one palette colour


def _as_float(images: np.ndarray) -> torch.Tensor:
    """(N,H,W,C) uint8 -> (N,C,H,W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def _as_uint8(x: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) float in [0, 1] (clamped) -> (N,H,W,C) uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _per_image(images: np.ndarray, seed: int, damage) -> np.ndarray:
    """Apply damage(x (C,H,W) float in [0,1], generator) to each image with its own stream."""
    x = _as_float(images)
    out = torch.stack([damage(xi, keyed_generator(seed, i, 31)) for i, xi in enumerate(x)]) if len(x) else x
    return _as_uint8(out)


def gaussian_noise(images: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """Add N(0, (0.25 level)^2) per pixel and channel, on the [0, 1] scale."""
    return _per_image(images, seed, lambda x, g: x + 0.25 * level * torch.randn(x.shape, generator=g))


def blur(images: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """Gaussian blur of standard deviation 1.5 level pixels (zero padding, like the black background)."""
    sigma = 1.5 * level
    if sigma == 0:
        return images.copy()
    taps = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = _as_float(images)
    channels = x.shape[1]
    x = F.conv2d(x, kernel.view(1, 1, 1, 7).repeat(channels, 1, 1, 1), padding=(0, 3), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, 7, 1).repeat(channels, 1, 1, 1), padding=(3, 0), groups=channels)
    return _as_uint8(x)


def colour_jitter(images: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """Per image: multiply each channel by exp(0.5 level u_c), u_c ~ N(0, 1) (brightness and tint)."""
    return _per_image(images, seed, lambda x, g: x * torch.exp(0.5 * level * torch.randn(x.shape[0], 1, 1, generator=g)))


def salt_and_pepper(images: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """Set a fraction 0.2 level of the pixels to black or white (each half the time)."""
    def damage(x, g):
        _, height, width = x.shape
        hit = torch.rand(height, width, generator=g) < 0.2 * level
        value = (torch.rand(height, width, generator=g) < 0.5).float()
        return torch.where(hit, value, x)
    return _per_image(images, seed, damage)


def swapped_patches(images: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """Cut each image into 4x4 patches and permute a fraction `level` of them among themselves."""
    def damage(x, g):
        channels, height, width = x.shape
        rows, cols = height // 4, width // 4
        patches = x.reshape(channels, rows, 4, cols, 4).permute(1, 3, 0, 2, 4).reshape(rows * cols, channels, 4, 4)
        count = int(round(level * rows * cols))
        chosen = torch.randperm(rows * cols, generator=g)[:count]
        order = torch.arange(rows * cols)
        order[chosen] = chosen[torch.roll(torch.arange(count), 1)] if count > 1 else chosen
        patches = patches[order]
        return patches.reshape(rows, cols, channels, 4, 4).permute(2, 0, 3, 1, 4).reshape(channels, height, width)
    return _per_image(images, seed, damage)


def palette_noise(images: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """Shift each palette colour of an image by N(0, (0.25 level)^2) per channel: every pixel of one
    colour moves together, so the sprite keeps its shapes and loses its palette. Colours are
    grouped into bins of PALETTE_BIN levels per channel (the sprites carry JPEG ringing, so a
    drawn colour comes as a cloud of nearby values)."""
    def damage(x, g):
        channels = x.shape[0]
        bins = (x.reshape(channels, -1).T * 255 / PALETTE_BIN).floor()
        _, index = torch.unique(bins, dim=0, return_inverse=True)
        shift = 0.25 * level * torch.randn(int(index.max()) + 1, channels, generator=g)
        return x + shift[index].T.reshape(x.shape)
    return _per_image(images, seed, damage)


DISTURBANCES = {
    "gaussian noise": gaussian_noise,
    "blur": blur,
    "colour jitter": colour_jitter,
    "salt and pepper": salt_and_pepper,
    "swapped patches": swapped_patches,
    "palette noise": palette_noise,
}
