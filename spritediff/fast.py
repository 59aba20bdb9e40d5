"""The fast inference path: BatchNorm folded into the convolutions, and on CUDA the whole eps call
replayed from a captured CUDA graph (one launch instead of hundreds of small kernels).

Both are exact reformulations: folding changes float rounding only; a graph replays the same kernels.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An inference copy of net where every Conv2d directly followed by a BatchNorm2d inside an
    nn.Sequential absorbs it (the norm becomes Identity). The original net is untouched."""
    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[i], module[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return folded


class CudaGraphEps:
    """eps_fn(x, t) for one fixed batch shape on CUDA, captured once and replayed.

    Calls copy x and t into static buffers, replay the graph and return a clone of the static output,
    so results stay valid across calls. Batches of another shape fall back to the eager function.
    """

    def __init__(self, eps_fn, example_x: torch.Tensor, warmup: int = 3):
        self.eps_fn = eps_fn
        self.x = example_x.clone()
        self.t = torch.ones(example_x.shape[0], dtype=torch.long, device=example_x.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # lets cuDNN/cuBLAS pick kernels and allocate outside the capture
                eps_fn(self.x, self.t)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = eps_fn(self.x, self.t)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape != self.x.shape:
            return self.eps_fn(x, t)
        self.x.copy_(x)
        self.t.copy_(t)
        self.graph.replay()
        return self.out.clone()
