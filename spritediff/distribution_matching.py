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

With a critic (DMD2's GAN term) the fake score also carries a FeatureCritic on its features at up1 (the first
decoder block, where its time and class have entered), trained beside its own loss to tell real sprites, noised,
from the student's samples, noised the same; the student is then pushed by it too. The critic compares with the
data, not the teacher: the one part of distribution matching that can take the student past its teacher.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import replace

import torch

from .adversarial import FeatureCritic, classifier_loss
from .checkpoint import SpriteModel
from .engine import Engine
from .samplers.common import predict_x0
from .train import diffusion_loss, noisy

T_MIN_SHARE = 0.02  # the smallest share of T the matching's noise levels are drawn from, as DMD (the top: a setting,
# DistillConfig.dmd_t_max, 0.98 as DMD)
CRITIC_WEIGHT = 1e-2  # the critic's loss in the fake score's, beside its denoising loss (DMD2's weight)


@contextmanager
def captured_output(module: torch.nn.Module):
    """A list that receives module's output at each forward call made inside the block."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


class FakeScore:
    """A denoiser of the student's samples: the teacher with a trainable copy of its net on device, in eval mode
    throughout (its BatchNorm statistics stay the teacher's, so that at the start it is the teacher's conditional
    denoiser), and its Adam (constant lr). precision: "fp32" or "bf16", for its training and its calls. critic: a
    FeatureCritic of the net's up1 features (n_feat channels) on device, trained in the same Adam, or None."""

    def __init__(self, teacher: SpriteModel, device: torch.device, lr: float, precision: str,
                 critic: FeatureCritic | None = None):
        self.model = replace(teacher, net=copy.deepcopy(teacher.net).to(device).eval())
        self.device, self.precision = device, precision
        self.alphas_cumprod = teacher.schedule.alphas_cumprod.float().to(device)
        self.critic = critic
        self.optimizer = torch.optim.Adam(self._trainable(True), lr=lr)
        self.critic_loss: float | None = None  # the critic's last loss, log 4 (1.386) at chance

    @property
    def net(self) -> torch.nn.Module:
        return self.model.net

    def _trainable(self, on: bool) -> list[torch.nn.Parameter]:
        """Sets whether the net's and the critic's weights take gradients; returns them."""
        weights = [*self.net.parameters(), *([] if self.critic is None else self.critic.parameters())]
        for p in weights:
            p.requires_grad_(on)
        return weights

    def learn(self, samples: torch.Tensor, context: torch.Tensor | None, generator: torch.Generator,
              real: torch.Tensor | None = None) -> float:
        """One step of the teacher's own loss on samples (B,C,H,W) in [-1, 1] (detached) with their (B, K) context
        rows; t and the noise from generator (CPU). With a critic, real (B,C,H,W) sprites of the same rows, noised
        at the same t with their own noise: the critic's loss on them against the samples' features joins it
        (CRITIC_WEIGHT times). Returns the denoising loss."""
        T = self.model.schedule.T
        t = torch.randint(1, T + 1, (len(samples),), generator=generator).to(samples.device)
        noise = torch.randn(samples.shape, generator=generator).to(samples.device)
        self._trainable(True)
        with captured_output(self.net.up1) as fake_features:
            loss = diffusion_loss(self.net, samples.detach(), context, t, noise, self.alphas_cumprod, T,
                                  self.precision, self.model.prediction_type)
        total = loss
        if self.critic is not None:
            real_noise = torch.randn(real.shape, generator=generator).to(real.device)
            real_t = noisy(real, real_noise, self.alphas_cumprod[t].view(-1, 1, 1, 1))
            critic_loss = classifier_loss(self.critic(self.features(real_t, t, context)), self.critic(fake_features[0]))
            total = loss + CRITIC_WEIGHT * critic_loss
            self.critic_loss = float(critic_loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return float(loss.detach())

    def features(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The net's up1 output (B, n_feat, H/2, W/2) at x_t (B,C,H,W), t (B,) integer times, context (B, K)."""
        low = self.precision == "bf16"
        with captured_output(self.net.up1) as outputs, torch.autocast(x_t.device.type, dtype=torch.bfloat16,
                                                                        enabled=low):
            self.net(x_t.contiguous(memory_format=torch.channels_last) if low else x_t,
                     t.float() / self.model.schedule.T, context)
        return outputs[0]

    def judge(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The critic's (B,) scores of x_t (B,C,H,W) at t (B,) integer times, high for real sprites; the gradient
        reaches x_t only (the net and the critic are held until the next learn)."""
        self._trainable(False)
        return self.critic(self.features(x_t, t, context))

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
