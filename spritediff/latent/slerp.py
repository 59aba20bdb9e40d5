"""Spherical interpolation between two latents (slerp keeps a Gaussian latent's norm; lerp does not)."""
from __future__ import annotations

import torch


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """z(a) = sin((1-a) th)/sin th z0 + sin(a th)/sin th z1, th the angle between z0 and z1 per sample.

    z0, z1: (B,...) latents; alpha: a number or a (B,) tensor in [0, 1]. Returns (B,...). Where z0 and z1
    are (anti)parallel (sin th ~ 0) it falls back to lerp.
    """
    flat0, flat1 = z0.reshape(len(z0), -1), z1.reshape(len(z1), -1)
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    alpha = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device).expand(len(z0))
    sin = torch.sin(theta)
    near = sin.abs() < 1e-6
    safe = torch.where(near, torch.ones_like(sin), sin)
    w0 = torch.where(near, 1 - alpha, torch.sin((1 - alpha) * theta) / safe)
    w1 = torch.where(near, alpha, torch.sin(alpha * theta) / safe)
    shape = (-1,) + (1,) * (z0.dim() - 1)
    return w0.view(shape) * z0 + w1.view(shape) * z1


def lerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """(1 - a) z0 + a z1, for comparison: its midpoint of two independent N(0, I) latents has norm ~ sqrt(d/2)."""
    alpha = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device).expand(len(z0))
    shape = (-1,) + (1,) * (z0.dim() - 1)
    return (1 - alpha).view(shape) * z0 + alpha.view(shape) * z1
