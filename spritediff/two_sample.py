"""A classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): can a small net tell samples from real sprites?

A fresh critic (a small CNN) learns to tell generated sprites from real ones on one half of each set and is
scored on the other half: held-out accuracy 0.5 means the two sets cannot be told apart, 1.0 that every sample
gives itself away. Unlike FD it sees pixels, not a feature net's summary, so speckle or a grey background that
a classifier's features ignore still counts. Its noise is measured by repeating it on other splits (and critic
initialisations); each accuracy also has the binomial standard error of its test set.

The real set is split by sprite (spritediff.features.sprite_groups): a sprite's mirror image never straddles
the halves, so the critic cannot score by remembering real sprites; the samples are split the same way, so
a model that draws one sprite twice cannot be caught by memory either. At most as many samples as real sprites
take part (a random choice of them). Images in: (N,H,W,C) uint8.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .defaults import TWO_SAMPLE_SPLITS as SPLITS  # repeats on other splits, for the test's own noise
from .pixels import to_model_space

STEPS = 300  # the critic's Adam steps at most: 40 epochs of a training set, at least MIN_STEPS
MIN_STEPS = 60
EPOCHS = 40
BATCH = 64
LR = 2e-3


class Critic(nn.Module):
    """(B,C,H,W) in [-1,1] -> (B,) logit of "real": three 3x3 conv layers (the last two stride 2), each with
    BatchNorm and GELU, global average pooling, a linear layer. (Without BatchNorm the same budget of epochs
    leaves it blind to mild noise: docs/metric.md.)"""

    def __init__(self, channels: int = 3, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1), nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


def two_sample_test(generated: np.ndarray, real: np.ndarray, real_groups: np.ndarray, seed: int = 0,
                    splits: int = SPLITS, steps: int | None = None) -> dict:
    """Held-out accuracy of critics telling generated from real, one per split, and their mean.

    generated: (n,H,W,C) uint8; real: (N,H,W,C) uint8 with real_groups (N,) sprite ids. Each split trains on
    half of each set (balanced: as many real as generated) and tests on the rest (balanced too), for `steps`
    Adam steps (default: EPOCHS passes over its training images, between MIN_STEPS and STEPS).
    Returns {"accuracy": mean, "splits": [accuracy per split], "stderr": binomial standard error of one split,
    "test_size": images per test set}."""
    if len(generated) < 4 or len(real) < 4:
        raise ValueError(f"the two-sample test needs at least 4 images of each set, got {len(generated)} and "
                         f"{len(real)}")
    from .features import sprite_groups

    generated = generated[np.random.default_rng([seed, 17]).permutation(len(generated))[:len(real)]]
    generated_groups = sprite_groups(generated)
    accuracies, test_size = [], 0
    for split in range(splits):
        rng = np.random.default_rng([seed, split, 13])
        gen_train, gen_test = _group_halves(generated, generated_groups, rng)
        real_train, real_test = _group_halves(real, real_groups, rng)
        gen_train, real_train = _balanced(gen_train, real_train, rng)
        gen_test, real_test = _balanced(gen_test, real_test, rng)
        budget = steps or min(STEPS, max(MIN_STEPS, math.ceil(EPOCHS * 2 * len(gen_train) / BATCH)))
        critic = fit_critic(gen_train, real_train, seed=int(rng.integers(2**31)), steps=budget)
        accuracies.append(critic_accuracy(critic, gen_test, real_test))
        test_size = len(gen_test) + len(real_test)
    mean = float(np.mean(accuracies))
    return {"accuracy": mean, "splits": [round(a, 4) for a in accuracies],
            "stderr": math.sqrt(max(mean * (1 - mean), 1e-12) / test_size), "test_size": test_size}


def _halves(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(images))
    return images[order[:len(images) // 2]], images[order[len(images) // 2:]]


def _group_halves(images: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of images by whole groups (about half the rows each)."""
    order = rng.permutation(groups.max() + 1)
    sizes = np.bincount(groups, minlength=len(order))[order]
    first = np.isin(groups, order[np.cumsum(sizes) <= len(images) / 2])
    if first.sum() < 2 or (~first).sum() < 2:  # one group holds (almost) everything
        return _halves(images, rng)
    return images[first], images[~first]


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """a and b cut to the smaller one's size by a random choice, so chance accuracy is 0.5."""
    m = min(len(a), len(b))
    return a[rng.permutation(len(a))[:m]], b[rng.permutation(len(b))[:m]]


def fit_critic(generated: np.ndarray, real: np.ndarray, seed: int = 0, steps: int = STEPS) -> Critic:
    """A Critic trained with Adam for `steps` batches of BATCH drawn with replacement, on binary cross-entropy
    (real = 1), with random mirror flips."""
    x = torch.cat((to_model_space(generated), to_model_space(real)))
    y = torch.cat((torch.zeros(len(generated)), torch.ones(len(real))))
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = Critic(x.shape[1])
    optimizer = torch.optim.Adam(critic.parameters(), lr=LR)
    critic.train()
    for _ in range(steps):
        rows = torch.randint(len(x), (min(BATCH, len(x)),), generator=g)
        flip = torch.rand(len(rows), generator=g) < 0.5
        xb = torch.where(flip[:, None, None, None], x[rows].flip(3), x[rows])
        loss = F.binary_cross_entropy_with_logits(critic(xb), y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return critic.eval()


@torch.no_grad()
def critic_accuracy(critic: Critic, generated: np.ndarray, real: np.ndarray) -> float:
    """Fraction of both sets the critic labels right (logit > 0: real)."""
    right = (critic(to_model_space(generated)) <= 0).sum() + (critic(to_model_space(real)) > 0).sum()
    return float(right) / (len(generated) + len(real))
