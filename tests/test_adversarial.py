"""The distillation critic (spritediff.adversarial): its hinge loss, the gradient balance, and that it learns."""
from __future__ import annotations

import pytest
import torch

from spritediff.adversarial import Critic, balanced_weight, critic_hinge_loss


def test_hinge_loss_counts_only_scores_inside_their_margin():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert critic_hinge_loss(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)


@pytest.mark.parametrize("ratio", [0.1, 1.0, 3.0])
def test_the_weighted_terms_gradient_is_ratio_times_the_references(ratio):
    g = torch.Generator().manual_seed(0)
    layer = torch.randn(3, 4, generator=g, requires_grad=True)
    x, y = torch.randn(4, 5, generator=g), torch.randn(3, 4, generator=g)
    reference, term = (layer @ x).pow(2).mean(), 7.0 * (layer * y).sum().sin()
    weight = balanced_weight(reference, term, layer, ratio)
    grad_reference, = torch.autograd.grad(reference, layer, retain_graph=True)
    grad_term, = torch.autograd.grad(weight * term, layer)
    assert not weight.requires_grad
    assert grad_term.norm().item() == pytest.approx(ratio * grad_reference.norm().item(), rel=1e-5)


@pytest.mark.parametrize("size", [8, 16])
def test_critic_gives_one_score_per_image_and_sees_the_start_and_the_time(size):
    torch.manual_seed(0)
    critic = Critic(3).eval()
    x0, x_t = torch.rand(5, 3, size, size) * 2 - 1, torch.randn(5, 3, size, size)
    early, late = critic(x0, x_t, torch.full((5,), 0.1)), critic(x0, x_t, torch.full((5,), 0.9))
    other_start = critic(x0, torch.randn(5, 3, size, size), torch.full((5,), 0.1))
    assert early.shape == (5,) and not torch.allclose(early, late) and not torch.allclose(early, other_start)


def test_critic_learns_to_tell_sharp_images_from_their_blur():
    """The failure it is there for: a softened image. 200 Adam steps separate 3x3-box-blurred noise images from
    the images themselves, held out, each shown with its own noised start."""
    torch.manual_seed(0)
    critic = Critic(3)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def pairs(n):
        sharp = torch.rand(n, 3, 16, 16) * 2 - 1
        soft = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1, count_include_pad=False)
        return sharp, soft, sharp + torch.randn_like(sharp), torch.rand(n)

    for _ in range(200):
        sharp, soft, x_t, t = pairs(32)
        loss = critic_hinge_loss(critic(sharp, x_t, t), critic(soft, x_t, t))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sharp, soft, x_t, t = pairs(64)
    with torch.no_grad():
        right = (critic(sharp, x_t, t) > 0).float().mean() + (critic(soft, x_t, t) < 0).float().mean()
    assert right.item() / 2 > 0.95
