"""DDPM and DDIM against the Gaussian-mixture oracle: exact answers without any training."""
import math

import numpy as np
import pytest
import torch
from oracle import GaussianMixture

from spritediff.samplers import REGISTRY, SAMPLERS
from spritediff.schedule import Schedule

SCHED = Schedule.course()
GM = GaussianMixture.small(std=0.3)
EPS = GM.eps_fn(SCHED)


def noise(n, seed):
    return torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def component_stats(x):
    """Nearest-mean assignment: fractions (K,), per-component means (K, D) and stds (K,)."""
    flat, mu = x.reshape(len(x), -1), GM.means.reshape(3, -1)
    k = torch.cdist(flat, mu).argmin(1)
    fractions = torch.bincount(k, minlength=3).double() / len(x)
    means = torch.stack([flat[k == j].mean(0) for j in range(3)])
    stds = torch.stack([flat[k == j].std(0).mean() for j in range(3)])  # per-coordinate std
    return fractions, means, stds


@pytest.mark.parametrize("variance", ["course", "posterior"])
def test_ddpm_reproduces_the_mixture(variance):
    n = 6000
    x = SAMPLERS["ddpm"](EPS, noise(n, 1), SCHED, variance=variance, generator=torch.Generator().manual_seed(2))
    fractions, means, stds = component_stats(x)
    se = torch.sqrt(GM.weights * (1 - GM.weights) / n)
    assert torch.all((fractions - GM.weights).abs() < 4 * se + 0.01), fractions  # nearest-mean mislabels ~1%
    assert torch.allclose(means, GM.means.reshape(3, -1), atol=0.04), means
    assert torch.allclose(stds, torch.full((3,), GM.std, dtype=torch.float64), atol=0.03), stds


def test_ddpm_with_skipped_steps_still_samples_the_mixture():
    x_T = noise(4000, 3)
    x = SAMPLERS["ddpm"](EPS, x_T, SCHED, steps=50, variance="posterior", generator=torch.Generator().manual_seed(4))
    fractions, means, stds = component_stats(x)
    assert torch.allclose(fractions, GM.weights, atol=0.03)
    assert torch.allclose(means, GM.means.reshape(3, -1), atol=0.05)
    assert torch.allclose(stds, torch.full((3,), GM.std, dtype=torch.float64), atol=0.04), stds
    # a stochastic sampler: other noise along the way, from the same x_T, ends elsewhere (a deterministic
    # DDIM would return x again); with the posterior variance most of x's spread comes from that noise
    again = SAMPLERS["ddpm"](EPS, x_T, SCHED, steps=50, variance="posterior", generator=torch.Generator().manual_seed(5))
    assert (again - x).abs().mean() > 0.5 * GM.std


def test_ddim_converges_to_the_probability_flow_ode_at_first_order():
    x_T = noise(64, 5)
    reference = GM.ode_solution(x_T, SCHED.alpha_bar(500))
    steps = [10, 20, 50, 100, 250]
    errors = [(SAMPLERS["ddim"](EPS, x_T, SCHED, steps=s) - reference).abs().max().item() for s in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert -1.15 < slope < -0.8, (slope, errors)
    assert errors[-1] < 0.02


def test_a_near_zero_terminal_snr_schedule_samples_the_mixture_from_pure_noise():
    """With SNR 1e-5 at T (Schedule.course(terminal_snr=...)), x_T is the pure noise the samplers start from, the
    first step divides by sqrt(ab_T) = 0.003, and still: DDPM-50 draws the mixture and DDIM-250 follows the exact
    probability-flow ODE from ab_T."""
    rescaled = Schedule.course(terminal_snr=1e-5)
    eps = GM.eps_fn(rescaled)
    x = SAMPLERS["ddpm"](eps, noise(4000, 11), rescaled, steps=50, variance="posterior",
                         generator=torch.Generator().manual_seed(12))
    fractions, means, stds = component_stats(x)
    assert torch.allclose(fractions, GM.weights, atol=0.03), fractions
    assert torch.allclose(means, GM.means.reshape(3, -1), atol=0.05), means
    assert torch.allclose(stds, torch.full((3,), GM.std, dtype=torch.float64), atol=0.04), stds
    x_T = noise(64, 13)
    reference = GM.ode_solution(x_T, rescaled.alpha_bar(500))
    assert (SAMPLERS["ddim"](eps, x_T, rescaled, steps=250) - reference).abs().max() < 0.03


def test_ddim_eta_one_is_ddpm_with_posterior_variance():
    for steps in (500, 37):
        ddpm = SAMPLERS["ddpm"](EPS, noise(16, 6), SCHED, steps=steps, variance="posterior",
                                generator=torch.Generator().manual_seed(7))
        ddim = SAMPLERS["ddim"](EPS, noise(16, 6), SCHED, steps=steps, eta=1.0,
                                generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(ddim, ddpm, rtol=0, atol=1e-10)


def test_ddim_is_deterministic_and_eta_adds_noise():
    a = SAMPLERS["ddim"](EPS, noise(8, 8), SCHED, steps=20)
    b = SAMPLERS["ddim"](EPS, noise(8, 8), SCHED, steps=20, generator=torch.Generator().manual_seed(1))
    c = SAMPLERS["ddim"](EPS, noise(8, 8), SCHED, steps=20, eta=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("eta", [-1e-9, 1.0 + 1e-9, 2.0])
def test_ddim_refuses_eta_outside_its_declared_range(eta):
    assert REGISTRY["ddim"].options["eta"].low == 0.0 and REGISTRY["ddim"].options["eta"].high == 1.0
    with pytest.raises(ValueError, match="eta must be in \\[0, 1\\]"):
        SAMPLERS["ddim"](EPS, noise(2, 1), SCHED, steps=2, eta=eta)
    SAMPLERS["ddim"](EPS, noise(2, 1), SCHED, steps=2, eta=min(max(eta, 0.0), 1.0))  # the bounds themselves run


def test_one_ddim_step_is_the_predicted_x0():
    x_T = noise(8, 9)
    t = torch.full((8,), 500)
    x0_hat = (x_T - math.sqrt(1 - SCHED.alpha_bar(500)) * EPS(x_T, t)) / math.sqrt(SCHED.alpha_bar(500))
    torch.testing.assert_close(SAMPLERS["ddim"](EPS, x_T, SCHED, steps=1), x0_hat)


@pytest.mark.parametrize("steps", [1, 3, 30, 499, 500])
@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_any_step_count_runs_and_reports_every_step(name, steps):
    seen, calls = [], []

    def eps(x, t):
        calls.append(int(t[0]))
        return EPS(x, t)

    x = SAMPLERS[name](eps, noise(2, 10), SCHED, steps=steps, callback=seen.append,
                       generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    assert len(calls) == steps and calls == [info.t for info in seen]
    assert [info.index for info in seen] == list(range(steps))
    assert calls == SCHED.timesteps(steps)[:-1]
    assert all(info.x_t.shape == info.x0_hat.shape == (2, 1, 2, 2) for info in seen)


def test_course_ddim_bug_is_fixed_for_non_divisors():
    # the course's step_size = 500 // n reads ab at a negative index for n = 30; here the grid stays in range
    ts = SCHED.timesteps(30)
    assert min(ts) == 0 and max(ts) == 500 and len(set(ts)) == 31


def test_per_sample_generators_make_rows_independent_of_the_batch():
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(4)]  # noqa: E731
    full = SAMPLERS["ddpm"](EPS, noise(4, 11), SCHED, steps=25, generator=gens())
    part = SAMPLERS["ddpm"](EPS, noise(4, 11)[2:], SCHED, steps=25, generator=gens()[2:])
    torch.testing.assert_close(full[2:], part, rtol=0, atol=1e-12)


def test_keyed_generator_seeds_from_both_state_words_without_overlap():
    """The 64-bit seed is (word0 << 32) | word1 of the keys' SeedSequence state: flipping any bit of either word
    changes the seed, so no two key tuples share a stream by a carry between overlapping bits."""
    from spritediff.rng import keyed_generator

    for keys in [(0,), (1, 2), (2**31, 7, 1)]:
        word0, word1 = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
        seed = keyed_generator(*keys).initial_seed()
        assert (seed >> 32, seed & 0xFFFFFFFF) == (int(word0), int(word1))
    assert len({keyed_generator(seed, i).initial_seed() for seed in range(20) for i in range(50)}) == 1000
