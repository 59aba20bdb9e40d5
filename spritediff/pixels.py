"""Pixels between disk and model: uint8 NHWC in 0..255 on disk, float NCHW in [-1, 1] in the model."""
from __future__ import annotations

import numpy as np
import torch


def to_model_space(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,H,W,C) uint8 -> (N,C,H,W) float32 in [-1, 1], on the input's device."""
    images = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return to_model_range(images.permute(0, 3, 1, 2))


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 values 0..255, in any layout -> float32 in [-1, 1], same layout: u / 127.5 - 1."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) float in [-1, 1] -> (N,H,W,C) uint8: clamp, then map [-1,1] to [0,255] (no per-image stretch)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
