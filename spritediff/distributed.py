"""Scale-out with PyTorch's own engine: torchrun sets RANK/WORLD_SIZE; we run DistributedDataParallel.

BatchNorm must see the whole global batch for a K-process step to equal a one-process step:
torch's SyncBatchNorm does that on CUDA; on the CPU (gloo), where it is unsupported, AllReduceBatchNorm2d
reduces the batch statistics with a differentiable all-reduce.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: int) -> slice:
        """This rank's rows of a global batch (batch must be divisible by size)."""
        per_rank = batch // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def init_world(device: torch.device) -> World:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each process takes the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def close_world(world: World) -> None:
    """Leave the process group together: a rank that tears gloo down while rank 0 is still writing its
    checkpoint can abort ("terminate called without an active exception")."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum reaching every process is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch summed over all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        local = torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))])  # (2, C)
        total = _AllReduceSum.apply(local)
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = total[0] / count
        var = total[1] / count - mean * mean  # biased, as BatchNorm normalises with
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / (count - 1), self.momentum)
        scale = self.weight / torch.sqrt(var + self.eps)
        return (x - mean[None, :, None, None]) * scale[None, :, None, None] + self.bias[None, :, None, None]


def sync_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d compute global-batch statistics (state_dict keys unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for module in net.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = AllReduceBatchNorm2d
    return net
