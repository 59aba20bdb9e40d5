"""An adversarial term for distillation: a critic that tells the teacher's x0 targets from the student's, and the
weight that balances its gradient against the distillation loss's (docs/design.md 4.16, "A loss that does not
average").

A squared error on a jump the student cannot resolve exactly is smallest at the average of what the jump could
land on: a softened sprite. A critic judges each x0 by itself, so it penalises the softening the squared error
rewards. The critic sees an x0 (the teacher's target or the student's), the x_t it was predicted from and the time t:
given x_t the target is one image, so the critic can tell a landing that does not fit its x_t as well as a soft
one (a critic of x0 and t alone was fooled within 10 steps of the term joining: docs/results.md). It is trained
with the hinge loss (Lim and Ye 2017) and its layers are spectrally normalised (Miyato et al., ICLR 2018),
so that its gradient, the thing the student follows, stays bounded.

A second critic (SampleCritic) judges the student's whole few-call sample against real sprites of the same class
(as the adversarial terms of Sauer et al.'s ADD, 2023, and Yin et al.'s DMD2, 2024, judge against real images):
the first critic can at best bring the student to its teacher's sampler, this one can take it past it.

A third (FeatureCritic, DMD2's classifier) judges noised samples by the fake score's own features
(spritediff.distribution_matching): a denoiser trained on the student's samples all along sees what sets them apart,
which a small critic from scratch did not (the sample critic was fooled within 25 steps: docs/results.md). It is
trained, with the fake score under it, by the non-saturating loss of DMD2 (softplus), not the hinge.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

WIDTH = 64
SLOPE = 0.2  # LeakyReLU's negative slope
GROUPS = 8  # FeatureCritic's GroupNorm groups


def feature_layers(in_channels: int, width: int = WIDTH) -> nn.Sequential:
    """The critics' spectrally normalised layers: (B, in_channels, H, W), H a multiple of 4 -> (B, 2 width)."""
    return nn.Sequential(
        spectral_norm(nn.Conv2d(in_channels, width, 3, 1, 1)), nn.LeakyReLU(SLOPE),
        spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(SLOPE),
        spectral_norm(nn.Conv2d(2 * width, 2 * width, 4, 2, 1)), nn.LeakyReLU(SLOPE),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


def planes(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, K) values as K constant planes the size of like (B,C,H,W), in its dtype: (B, K, H, W)."""
    return values.to(like.dtype).view(*values.shape, 1, 1).expand(-1, -1, *like.shape[2:])


class Critic(nn.Module):
    """score = critic(x0 (B,C,H,W) in [-1, 1], x_t (B,C,H,W), t (B,) as a fraction of T): (B,) real-valued, high
    for targets. H a multiple of 4; x_t and t enter as more input channels (t as a constant plane)."""

    def __init__(self, channels: int, width: int = WIDTH):
        super().__init__()
        self.features = feature_layers(2 * channels + 1, width)
        self.head = spectral_norm(nn.Linear(2 * width, 1))

    def forward(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([x0, x_t.to(x0.dtype), planes(t.view(-1, 1), x0)], dim=1)
        return self.head(self.features(inputs)).flatten()


class SampleCritic(nn.Module):
    """score = critic(x (B,C,H,W) in [-1, 1], context (B, classes) or None): (B,) real-valued, high for real
    sprites. A finished sample is judged with the class it was asked for (its one-hot row as constant planes; a
    zero row, or classes = 0, for no context)."""

    def __init__(self, channels: int, classes: int = 0, width: int = WIDTH):
        super().__init__()
        self.classes = classes
        self.features = feature_layers(channels + classes, width)
        self.head = spectral_norm(nn.Linear(2 * width, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.classes:
            rows = torch.zeros(len(x), self.classes, device=x.device) if context is None else context
            x = torch.cat([x, planes(rows, x)], dim=1)
        return self.head(self.features(x)).flatten()


class FeatureCritic(nn.Module):
    """score = critic(features (B, channels, h, w)): (B,) real-valued, high for real sprites; h, w multiples of 4.
    The features are a denoiser's, at a noised image's time and class, so the critic needs neither. As DMD2's head,
    convolutions with GroupNorm and no spectral norm: the balanced weight bounds what the student follows, and a
    1-Lipschitz critic of small features could not part them (tests/test_distribution_matching.py)."""

    def __init__(self, channels: int, width: int = WIDTH):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.GroupNorm(GROUPS, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(GROUPS, 2 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features.float()).flatten()


def classifier_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """A FeatureCritic's loss, non-saturating (DMD2): mean softplus(-real) + mean softplus(fake), log 4 at chance."""
    return nn.functional.softplus(-real_scores).mean() + nn.functional.softplus(fake_scores).mean()


def critic_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The critic's loss: mean relu(1 - real) + mean relu(1 + fake), 0 once every score is past its margin."""
    return torch.relu(1 - real_scores).mean() + torch.relu(1 + fake_scores).mean()


def balanced_weight(reference: torch.Tensor, term: torch.Tensor, layer: torch.Tensor, ratio: float) -> torch.Tensor:
    """The detached scalar w for which w * term's gradient at `layer` has `ratio` times the norm of reference's
    (Esser et al., CVPR 2021, "adaptive weight"): the term's strength then does not depend on its own scale,
    which a critic's changes as it trains. Both losses' graphs are kept for the backward pass that follows."""
    grad_reference, = torch.autograd.grad(reference, layer, retain_graph=True)
    grad_term, = torch.autograd.grad(term, layer, retain_graph=True)
    return (ratio * grad_reference.norm() / (grad_term.norm() + 1e-8)).clamp(max=1e4).detach()
