"""BatchNorm statistics for an averaged net: measured on the net itself, not borrowed from another.

An EMA of the weights is a net that never ran a forward pass in training mode, so its BatchNorm running
statistics are either an EMA of the live net's (AveragedModel with use_buffers=True) or the live net's
copied. Both describe the activations of a different net. `recalibrate` measures them on the averaged
net itself, over the training distribution of (x_t, t, c), as SWA's update_bn does for its average.
"""
from __future__ import annotations

import torch
from torch import nn

from .pixels import to_model_space
from .rng import keyed_generator
from .train import noisy


@torch.no_grad()
def recalibrate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, alphas_cumprod: torch.Tensor,
                T: int, batches: int = 100, batch: int = 100, context_drop: float = 0.1, seed: int = 0) -> nn.Module:
    """Set every BatchNorm's running mean and variance of net (in place) to their averages over `batches`
    training batches of x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, t uniform in 1..T; returns net in eval mode.

    images: (N,H,W,C) uint8 on net's device; labels: (N,K) one-hot or None; alphas_cumprod: (T+1,).
    The draws come from generators keyed by (seed, k), so the result is a function of its arguments."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return net.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an EMA
    net.train()
    try:
        for k in range(batches):
            x_t, t, c = training_batch(images, labels, alphas_cumprod, T, batch, context_drop, seed, k)
            net(x_t, t.to(x_t.dtype) / T, c)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    return net.eval()


def training_batch(images: torch.Tensor, labels: torch.Tensor | None, alphas_cumprod: torch.Tensor, T: int,
                   batch: int, context_drop: float, seed: int, k: int):
    """Batch k of the training distribution: x_t (B,C,H,W), t (B,) in 1..T, context (B,K) or None."""
    g = keyed_generator(seed, k, 7)
    rows = torch.randint(len(images), (batch,), generator=g)
    t = torch.randint(1, T + 1, (batch,), generator=g)
    x0 = to_model_space(images[rows.to(images.device)])
    noise = torch.randn(x0.shape, generator=g).to(x0.device)
    ab = alphas_cumprod[t.to(x0.device)].view(-1, 1, 1, 1).to(x0.dtype)
    x_t = noisy(x0, noise, ab)
    if labels is None:
        return x_t, t.to(x0.device), None
    keep = (torch.rand(batch, generator=g) >= context_drop).to(x0.dtype).to(x0.device)
    return x_t, t.to(x0.device), labels[rows.to(labels.device)].to(x0.dtype) * keep[:, None]
