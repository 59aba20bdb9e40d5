"""Net + schedule -> the eps function samplers call, with context, classifier-free guidance and the net's
prediction type (eps, x0 or v) converted to eps."""
from __future__ import annotations

import torch
from torch import nn

from .checks import PREDICTION_TYPES, check_prediction_type, shown
from .schedule import Schedule



def eps_from_output(out: torch.Tensor, x: torch.Tensor, ab: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The eps that a net output `out` (B,C,H,W) of the given prediction type implies at x_t = x (B,C,H,W).

    ab: alpha_bar of each sample, broadcastable to x, e.g. (B,1,1,1).
    x0: eps = (x - sqrt(ab) x0) / sqrt(1 - ab); at ab = 1 (t = 0, which DDIM inversion calls) it is 0, the best
    guess of noise that a clean x says nothing about.  v = sqrt(ab) eps - sqrt(1 - ab) x0: eps = sqrt(ab) v +
    sqrt(1 - ab) x.
    """
    if prediction_type == "eps":
        return out
    if prediction_type == "x0":
        eps = (x - ab.sqrt() * out) / (1 - ab).sqrt()
        return torch.where(ab < 1, eps, torch.zeros_like(eps))
    if prediction_type == "v":
        return ab.sqrt() * out + (1 - ab).sqrt() * x
    raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {shown(prediction_type)}")


class Denoiser:
    """eps(x, t) for a net trained on t/T, conditioned on a fixed per-sample context.

    context: (B, n_cfeat) float or None (the zero vector: unconditional); it is moved to x's device on the
    first call only if it is elsewhere, so pass it on the sampling device (a CUDA graph cannot capture a copy).
    guidance: classifier-free guidance weight w >= 0: eps = (1 + w) eps(c) - w eps(0); w = 0 is the
    plain conditional model. Both branches run as one batched call.
    bf16: run the net under bf16 autocast; its output, and all the sampler's arithmetic, stay fp32.
    prediction_type: what the net outputs, "eps" (default), "x0" or "v" (SpriteModel.prediction_type); it is
    converted to eps after guidance, which is the same as guiding the eps (the conversion is affine in the
    output with weights that sum to 1 over the two branches: docs/design.md).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, context: torch.Tensor | None = None,
                 guidance: float = 0.0, bf16: bool = False, prediction_type: str = "eps"):
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        self.net, self.schedule, self.context, self.guidance, self.bf16 = net, schedule, context, guidance, bf16
        self.prediction_type = check_prediction_type(prediction_type)
        self._alpha_bars: torch.Tensor | None = None  # schedule.alphas_cumprod on x's device and dtype, made once

    def _context(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            return like.new_zeros(batch, self.net.n_cfeat)
        if self.context.device != like.device or self.context.dtype != like.dtype:
            self.context = self.context.to(device=like.device, dtype=like.dtype)
        return self.context

    def _net(self, x: torch.Tensor, time: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x, time, c).float()

    def _to_eps(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """out (B,C,H,W), the net's (guided) output at x (B,C,H,W), t (B,), as eps."""
        if self.prediction_type == "eps":
            return out
        table = self._alpha_bars
        if table is None or table.device != x.device or table.dtype != x.dtype:
            table = self._alpha_bars = self.schedule.alphas_cumprod.to(device=x.device, dtype=x.dtype)
        return eps_from_output(out.to(x.dtype), x, table[t].view(-1, *[1] * (x.dim() - 1)), self.prediction_type)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (B,C,H,W); t: (B,) integer timesteps. Returns predicted noise (B,C,H,W)."""
        time = t.to(x.dtype) / self.schedule.T
        c = self._context(x.shape[0], x)
        if self.guidance == 0 or self.context is None:
            return self._to_eps(self._net(x, time, c), x, t)
        out_c, out_u = self._net(torch.cat([x, x]), torch.cat([time, time]),
                                 torch.cat([c, torch.zeros_like(c)])).chunk(2)
        return self._to_eps(out_c + self.guidance * (out_c - out_u), x, t)
