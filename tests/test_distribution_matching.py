"""Distribution matching (spritediff.distribution_matching) on the Gaussian-mixture oracle: with exact scores the
term's direction is the closed-form difference of the two posterior means, and following it moves a shifted
student's distribution onto the teacher's. Then the fake score's critic (DMD2's GAN term) on a tiny net."""
from __future__ import annotations

import math

import torch

from conftest import COURSE_CLASSES
from oracle import GaussianMixture
from spritediff.adversarial import FeatureCritic, classifier_loss
from spritediff.checkpoint import SpriteModel
from spritediff.distill_config import DistillConfig
from spritediff.distribution_matching import FakeScore, matching_direction, matching_loss, noise_levels
from spritediff.models import ContextUnet
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


def test_the_critics_loss_is_log_4_at_chance_and_falls_as_the_scores_part():
    zero = torch.zeros(8)
    assert math.isclose(float(classifier_loss(zero, zero)), 2 * math.log(2), rel_tol=1e-6)
    assert float(classifier_loss(zero + 3, zero - 3)) < 0.1 and float(classifier_loss(zero - 3, zero + 3)) > 6


def group_norm_model() -> SpriteModel:
    """A tiny untrained net whose features carry its input: GroupNorm keeps the signal that the random BatchNorm
    net of tiny_model loses by its decoder (its up1 output is the same for any image to 1e-8)."""
    torch.manual_seed(0)
    return SpriteModel(ContextUnet(n_feat=8, norm="group").eval(), SCHEDULE, COURSE_CLASSES, {"source": "test"})


def test_the_fake_scores_critic_learns_to_tell_bright_sprites_from_dark_ones():
    """learn() with real images: its critic, on the fake score's features, parts real (+0.6) from samples (-0.6)
    well past chance (log 4 = 1.386; at high noise levels the two cannot be told apart) within 60 steps; without
    real images no critic is built or trained."""
    fake_score = FakeScore(group_norm_model(), torch.device("cpu"), lr=3e-3, precision="fp32",
                           critic=FeatureCritic(8))
    g = torch.Generator().manual_seed(0)
    samples, real = torch.full((32, 3, 16, 16), -0.6), torch.full((32, 3, 16, 16), 0.6)
    context = torch.eye(5)[torch.arange(32) % 5]
    losses = []
    for _ in range(60):
        fake_score.learn(samples, context, g, real)
        losses.append(fake_score.critic_loss)
    assert abs(losses[0] - 2 * math.log(2)) < 0.05 and sum(losses[-10:]) / 10 < 1.2
    plain = FakeScore(group_norm_model(), torch.device("cpu"), lr=3e-3, precision="fp32")
    assert plain.critic is None and plain.learn(samples, context, g) > 0 and plain.critic_loss is None


def test_judging_passes_a_gradient_to_the_image_only_and_learning_resumes():
    fake_score = FakeScore(group_norm_model(), torch.device("cpu"), lr=3e-3, precision="fp32",
                           critic=FeatureCritic(8))
    x_t = torch.randn(4, 3, 16, 16, requires_grad=True)
    fake_score.judge(x_t, torch.tensor([10, 100, 250, 490]), None).sum().backward()
    assert x_t.grad.abs().sum() > 0
    weights = [*fake_score.net.parameters(), *fake_score.critic.parameters()]
    assert all(p.grad is None for p in weights)
    critic_before = [p.detach().clone() for p in fake_score.critic.parameters()]
    fake_score.learn(torch.zeros(4, 3, 16, 16), None, torch.Generator().manual_seed(0), torch.ones(4, 3, 16, 16))
    assert all(p.grad is not None for p in weights)
    assert all(not torch.equal(a, p) for a, p in zip(critic_before, fake_score.critic.parameters()))
