"""Distribution matching (spritediff.distribution_matching) on the Gaussian-mixture oracle: with exact scores the
term's direction is the closed-form difference of the two posterior means, and following it moves a shifted
student's distribution onto the teacher's."""
from __future__ import annotations

import math

import torch

from oracle import GaussianMixture
from spritediff.distill_config import DistillConfig
from spritediff.distribution_matching import matching_direction, matching_loss, noise_levels
from spritediff.samplers.common import predict_x0
from spritediff.schedule import Schedule

SCHEDULE = Schedule.course()


def posterior_mean(mixture: GaussianMixture, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] of the mixture's data, from its exact eps."""
    ab = SCHEDULE.alphas_cumprod[t].double().view(-1, 1, 1, 1)
    return predict_x0(x_t, mixture.eps_fn(SCHEDULE)(x_t, t), ab)


def test_the_direction_is_the_difference_of_the_posterior_means_of_two_gaussians():
    """For N(mu_f, s^2 I) against N(mu_r, s^2 I), x0_fake - x0_real = (mu_f - mu_r) (1 - ab) / (ab s^2 + 1 - ab)
    at every x_t; the direction divides it by each sample's mean distance to x0_real, and the loss's gradient is
    the direction over the batch size."""
    std = 0.3
    real = GaussianMixture(torch.tensor([[0.2, -0.4, 0.1, 0.5]]).view(1, 1, 2, 2), torch.ones(1), std)
    fake = GaussianMixture(torch.tensor([[-0.3, 0.1, 0.4, 0.2]]).view(1, 1, 2, 2), torch.ones(1), std)
    g = torch.Generator().manual_seed(0)
    samples = (fake.sample(16, g)[0]).requires_grad_(True)
    t = noise_levels(16, SCHEDULE.T, g, DistillConfig.dmd_t_max)
    ab = SCHEDULE.alphas_cumprod[t].double().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * samples.detach() + (1 - ab).sqrt() * torch.randn(samples.shape, generator=g, dtype=torch.float64)
    x0_real, x0_fake = posterior_mean(real, x_t, t), posterior_mean(fake, x_t, t)
    shift = (fake.means - real.means) * (1 - ab) / (ab * std**2 + 1 - ab)
    assert torch.allclose(x0_fake - x0_real, shift, atol=1e-10)
    direction = matching_direction(samples.detach(), x0_real, x0_fake)
    scale = (samples.detach() - x0_real).abs().mean((1, 2, 3), keepdim=True)
    assert torch.allclose(direction * scale, shift, atol=1e-10)
    matching_loss(samples, direction).backward()
    assert torch.allclose(samples.grad, direction / 16, atol=1e-12)


def test_following_it_with_exact_scores_moves_a_shifted_student_onto_the_teacher():
    """A student that draws the teacher's mixture shifted by theta, its fake score exact (the mixture shifted by
    theta): gradient steps on the matching loss bring theta from 0.5 per pixel to the teacher's 0, and the
    squared distance falls at every step of the way (checked every 10)."""
    teacher = GaussianMixture.small()
    theta = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    distances = []
    for step in range(200):
        base, _ = teacher.sample(256, g)
        samples = base + theta
        student = GaussianMixture(teacher.means + theta.detach(), teacher.weights, teacher.std)
        t = noise_levels(256, SCHEDULE.T, g, DistillConfig.dmd_t_max)
        ab = SCHEDULE.alphas_cumprod[t].double().view(-1, 1, 1, 1)
        x_t = ab.sqrt() * samples.detach() + (1 - ab).sqrt() * torch.randn(samples.shape, generator=g,
                                                                            dtype=torch.float64)
        direction = matching_direction(samples.detach(), posterior_mean(teacher, x_t, t),
                                       posterior_mean(student, x_t, t))
        theta.grad = None
        matching_loss(samples, direction).backward()
        with torch.no_grad():
            theta -= 0.05 * theta.grad
        if step % 10 == 0:
            distances.append(float(theta.detach().square().sum()))
    assert all(later < earlier for earlier, later in zip(distances, distances[1:]))
    assert math.sqrt(distances[-1]) < 0.05 * math.sqrt(4 * 0.25)


def test_noise_levels_stay_inside_the_share_of_T():
    t = noise_levels(10_000, 500, torch.Generator().manual_seed(0), DistillConfig.dmd_t_max)
    assert int(t.min()) == 10 and int(t.max()) == 490
    low = noise_levels(10_000, 500, torch.Generator().manual_seed(0), top=0.3)
    assert int(low.min()) == 10 and int(low.max()) == 150
