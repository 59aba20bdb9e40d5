"""The fast inference path, on by default on every device.

- BatchNorm folded into the convolutions (an exact reformulation: float rounding only);
- on the CPU, channels-last weights (oneDNN's preferred layout);
- bf16: the net's convolutions and matmuls under bf16 autocast, the sampler's arithmetic in fp32
  (precision "bf16", or "auto" on a CPU with native bf16 instructions);
- on CUDA, the whole eps call replayed from a captured CUDA graph (one launch instead of hundreds).

prepare_net never touches the caller's net: it works on a copy.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .checks import check_precision_name

BF16_MIN_ROWS = 4  # benchmarks/bf16_crossover.py: below 4 rows a call bf16 is level or slower (up to 2x at one row, n_feat 32), from 4 on faster


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


def prepare_net(net: nn.Module, device: torch.device, fast: bool) -> nn.Module:
    """An eval-mode copy of net on device: folded and, on the CPU, channels-last when fast.

    The caller's net keeps its device, mode and weights."""
    if not fast:
        return copy.deepcopy(net).to(device).eval()
    folded = fold_batchnorm(net).to(device)
    return folded.to(memory_format=torch.channels_last) if device.type == "cpu" else folded


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (x86 AVX-512 BF16 or AMX), where bf16 convolutions
    run about twice as fast as fp32; without them oneDNN emulates bf16 and it is slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


DTYPE_PRECISIONS = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def check_precision(precision) -> str:
    """precision (one of PRECISIONS, or torch.float32 / torch.bfloat16) as one of PRECISIONS, or a one-line
    user error."""
    if isinstance(precision, torch.dtype) and precision in DTYPE_PRECISIONS:
        return DTYPE_PRECISIONS[precision]
    return check_precision_name(precision)


def resolve_precision(precision: str, device: torch.device, rows: int | None = None) -> str:
    """fp32 or bf16. auto is bf16 on a CPU with native bf16 (docs/results.md: bf16 scores within the metric's
    seed noise of fp32 with every sampler) when the net sees at least BF16_MIN_ROWS rows a call (rows None:
    unknown, taken as many), and fp32 elsewhere: for one row bf16's casts cost more than they save, and CUDA
    is unmeasured in bf16."""
    precision = check_precision(precision)
    if precision != "auto":
        return precision
    many = rows is None or rows >= BF16_MIN_ROWS
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() and many else "fp32"


def graphed_or_eager(eps_fn, example_x: torch.Tensor):
    """eps_fn replayed from a CUDA graph captured on example_x's shape; eps_fn itself, with a one-line warning,
    if the capture fails."""
    try:
        return CudaGraphEps(eps_fn, example_x)
    except RuntimeError as error:
        warnings.warn(f"CUDA graph capture failed, sampling eagerly: {str(error).splitlines()[0]}", stacklevel=2)
        return eps_fn


class CudaGraphEps:
    """eps_fn(x, t) for one fixed batch shape on CUDA, captured once and replayed.

    Calls copy x and t into static buffers, replay the graph and return a clone of the static output,
    so results stay valid across calls. Batches of another shape fall back to the eager function.
    eps_fn's own inputs (the context) must already be on the GPU: a copy from the host cannot be captured.
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
