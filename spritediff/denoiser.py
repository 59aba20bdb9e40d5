"""Net + schedule -> the eps function samplers call, with context and classifier-free guidance."""
from __future__ import annotations

import torch
from torch import nn

from .schedule import Schedule

DEFAULT_GUIDANCE = 0.5  # docs/results.md, guidance table: precision, recall and class accuracy gain over 0; 0 = plain conditional


class Denoiser:
    """eps(x, t) for a net trained on t/T, conditioned on a fixed per-sample context.

    context: (B, n_cfeat) float or None (the zero vector: unconditional); it is moved to x's device on the
    first call only if it is elsewhere, so pass it on the sampling device (a CUDA graph cannot capture a copy).
    guidance: classifier-free guidance weight w >= 0: eps = (1 + w) eps(c) - w eps(0); w = 0 is the
    plain conditional model. Both branches run as one batched call.
    bf16: run the net under bf16 autocast; its output, and all the sampler's arithmetic, stay fp32.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, context: torch.Tensor | None = None,
                 guidance: float = 0.0, bf16: bool = False):
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        self.net, self.schedule, self.context, self.guidance, self.bf16 = net, schedule, context, guidance, bf16

    def _context(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            return like.new_zeros(batch, self.net.n_cfeat)
        if self.context.device != like.device or self.context.dtype != like.dtype:
            self.context = self.context.to(device=like.device, dtype=like.dtype)
        return self.context

    def _net(self, x: torch.Tensor, time: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x, time, c).float()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B,C,H,W); t: (B,) integer timesteps. Returns predicted noise (B,C,H,W)."""
        time = t.to(x.dtype) / self.schedule.T
        c = self._context(x.shape[0], x)
        if self.guidance == 0 or self.context is None:
            return self._net(x, time, c)
        eps_c, eps_u = self._net(torch.cat([x, x]), torch.cat([time, time]),
                                 torch.cat([c, torch.zeros_like(c)])).chunk(2)
        return eps_c + self.guidance * (eps_c - eps_u)
