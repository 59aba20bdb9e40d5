"""A wider ContextUnet that computes what a narrower one does (Net2WiderNet, Chen et al., ICLR 2016).

Widening by an integer factor k replaces every feature channel c by k copies, channels c k .. c k + k - 1, so a
feature map of the wide net is the narrow net's with each channel repeated k times (torch.repeat_interleave).
Then each layer of the wide net gets:

- output channels copied: weight and bias rows, BatchNorm's and GroupNorm's per-channel parameters and running
  statistics, repeated k times;
- input channels split: the k copies of input c carry the same value, so any weights w_1..w_k with
  w_1 + ... + w_k = w (the narrow weight) give the same sum. The split is random (positive shares drawn per weight),
  so the copies get different gradients and do not stay copies under training.

Every per-channel operation (activations, pooling, the time and context products) commutes with the repeat. A
GroupNorm of G groups over C channels becomes one of G groups over k C: its group g spans exactly the copies of the
narrow group g's channels, so its mean and variance are the same; BatchNorm normalises each channel alone.
Concatenation along channels commutes too: repeating [a, b] channel by channel is [repeat(a), repeat(b)].
"""
from __future__ import annotations

import torch
from torch import nn

from .context_unet import ContextUnet


def widen(net: ContextUnet, factor: int, generator: torch.Generator | None = None) -> ContextUnet:
    """A ContextUnet with n_feat * factor features whose forward pass equals net's (in train and eval mode, up
    to float rounding), on net's device and dtype. factor 1 gives a copy. generator: the random split shares."""
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    wide = ContextUnet.from_config(net.config(), n_feat=net.n_feat * factor)
    wide = wide.to(next(net.parameters()).device, next(net.parameters()).dtype)
    narrow_modules = dict(net.named_modules())
    with torch.no_grad():
        for name, module in wide.named_modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.GroupNorm)):
                _widen_module(narrow_modules[name], module, factor, generator)
    return wide.train(net.training)


def _widen_module(narrow: nn.Module, wide: nn.Module, factor: int, generator: torch.Generator | None) -> None:
    """Fill wide's parameters and buffers from narrow's: copied along output channels, split along inputs."""
    input_dim = 0 if isinstance(wide, nn.ConvTranspose2d) else 1  # ConvTranspose2d's weight is (in, out, ...)
    output_dim = 1 - input_dim
    for key, target in [*wide.named_parameters(recurse=False), *wide.named_buffers(recurse=False)]:
        source = getattr(narrow, key)
        if source.ndim == 0:  # BatchNorm's num_batches_tracked
            target.copy_(source)
            continue
        value = source
        if key == "weight" and source.ndim >= 2:
            value = _copy_dim(value, target.shape[output_dim], output_dim)
            value = _split_dim(value, target.shape[input_dim], input_dim, generator)
        else:  # a bias or a per-channel parameter or statistic
            value = _copy_dim(value, target.shape[0], 0)
        target.copy_(value)


def _copy_dim(value: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """value with each slice along dim repeated size / value.shape[dim] times (a dim that did not grow: as is)."""
    if size == value.shape[dim]:
        return value
    return value.repeat_interleave(size // value.shape[dim], dim=dim)


def _split_dim(value: torch.Tensor, size: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """value with each slice along dim repeated k = size / value.shape[dim] times and multiplied by random positive
    shares that sum to 1 over each slice's k copies, so the copies sum to value."""
    if size == value.shape[dim]:  # a dim that did not grow, the empty input of a net without classes included
        return value
    k = size // value.shape[dim]
    repeated = value.repeat_interleave(k, dim=dim)
    draws = 0.5 + torch.rand(repeated.shape, generator=generator, dtype=torch.float64)  # in [0.5, 1.5)
    grouped = draws.movedim(dim, 0).unflatten(0, (value.shape[dim], k))
    shares = (grouped / grouped.sum(1, keepdim=True)).flatten(0, 1).movedim(0, dim)
    return repeated * shares.to(repeated)
