"""Distribution matching for distillation (Yin et al., CVPR 2024, "DMD"; DMD2, NeurIPS 2024): a term that moves
the student's finished samples towards the teacher's distribution, not towards its sampler's landings
(docs/design.md 4.16, "Matching the teacher's distribution").

The gradient of KL(p_student || p_teacher) with respect to a sample x0 is, after noising it to x_t at a random t,
the difference of two scores there. The teacher's score is the teacher itself (guided, as it samples); the
student's is a FakeScore, a copy of the teacher fine-tuned online, with the teacher's own loss, on the student's
latest samples. In x0 terms the direction is x0_fake(x_t) - x0_real(x_t): a sample steps away from where the
student's denoiser would put it and towards where the teacher's would. DMD divides it by the sample's mean
distance to x0_real, so that its size does not depend on t. The reverse KL seeks the teacher's modes, which is what
a student short of precision lacks; the squared error to the teacher's jumps keeps its spread.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from .checkpoint import SpriteModel
from .engine import Engine
from .samplers.common import predict_x0
from .train import diffusion_loss

T_MIN_SHARE = 0.02  # the smallest share of T the matching's noise levels are drawn from, as DMD (the top: a setting,
# DistillConfig.dmd_t_max, 0.98 as DMD)


class FakeScore:
    """A denoiser of the student's samples: the teacher with a trainable copy of its net on device, in eval mode
    throughout (its BatchNorm statistics stay the teacher's, so that at the start it is the teacher's conditional
    denoiser), and its Adam (constant lr). precision: "fp32" or "bf16", for its training and its calls."""

    def __init__(self, teacher: SpriteModel, device: torch.device, lr: float, precision: str):
        self.model = replace(teacher, net=copy.deepcopy(teacher.net).to(device).eval())
        for p in self.net.parameters():
            p.requires_grad_(True)
        self.device, self.precision = device, precision
        self.alphas_cumprod = teacher.schedule.alphas_cumprod.float().to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    @property
    def net(self) -> torch.nn.Module:
        return self.model.net

    def learn(self, samples: torch.Tensor, context: torch.Tensor | None, generator: torch.Generator) -> float:
        """One step of the teacher's own loss on samples (B,C,H,W) in [-1, 1] (detached) with their (B, K) context
        rows; t and the noise from generator (CPU). Returns the loss."""
        T = self.model.schedule.T
        t = torch.randint(1, T + 1, (len(samples),), generator=generator).to(samples.device)
        noise = torch.randn(samples.shape, generator=generator).to(samples.device)
        loss = diffusion_loss(self.net, samples.detach(), context, t, noise, self.alphas_cumprod, T, self.precision,
                              self.model.prediction_type)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def eps(self, context: torch.Tensor | None):
        """eps(x, t) of the fake score as it is now, for (B, K) context rows, unguided, without gradient: run as
        `sample` runs a model (spritediff.engine, on a folded copy)."""
        return Engine(self.model, self.device, fast=True, precision=self.precision).eps(context)


def noise_levels(batch: int, T: int, generator: torch.Generator, top: float) -> torch.Tensor:
    """(batch,) integer times drawn uniformly from T_MIN_SHARE to `top` of T (top above T_MIN_SHARE, at most 1)."""
    low, high = (max(1, round(share * T)) for share in (T_MIN_SHARE, top))
    return torch.randint(low, high + 1, (batch,), generator=generator)


def matching_direction(samples: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD's gradient of the reverse KL at samples (B,C,H,W): (x0_fake - x0_real) / mean |samples - x0_real|,
    the mean over each sample's pixels (a step against it moves a sample towards the teacher's denoising)."""
    scale = (samples - x0_real).abs().flatten(1).mean(1).clamp(min=1e-6).view(-1, *[1] * (samples.dim() - 1))
    return (x0_fake - x0_real) / scale


def matching_loss(samples: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient with respect to samples (B,C,H,W) is direction / B: 0.5 |x - sg(x - direction)|^2
    summed over pixels, averaged over the batch (sg: no gradient)."""
    target = (samples - direction).detach()
    return 0.5 * (samples - target).pow(2).flatten(1).sum(1).mean()
