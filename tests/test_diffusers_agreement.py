"""Our samplers against diffusers' schedulers on the oracle: the same schedule, the same timesteps, no clipping or
thresholding.

Time mapping. Our ab_t (t = 1..T) is cumprod(1 - b)[t] over b = linspace(1e-4, 0.02, T + 1), a product that
includes (1 - b_0); ab_0 := 1 is clean data and no model is called there. diffusers has T training indices
j = 0..T-1 with alphas_cumprod[j] = cumprod(1 - betas)[j], and "clean" is its separate final step
(final_alpha_cumprod = 1, or final sigma = 0). So diffusers' index j is our t = j + 1, with
trained_betas = [1 - ab_1, b_2, ..., b_T] (then alphas_cumprod[j] = ab_{j+1} exactly, up to float32); the model
diffusers calls at j is ours at t = j + 1, and our grid [t_0, ..., t_{S-1}, 0] is diffusers' timesteps
[t_0 - 1, ..., t_{S-1} - 1] followed by its final step to clean.

diffusers keeps betas and sigmas in float32 and casts the sample to float32 in most step functions, so "the same
algorithm" agrees to ~1e-6 here, not to 1e-12.
"""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                       PNDMScheduler, UniPCMultistepScheduler)

from oracle import GaussianMixture
from spritediff.samplers import SAMPLERS
from spritediff.samplers.common import call_eps, predict_x0
from spritediff.samplers.dpmpp import exp_weights
from spritediff.schedule import Schedule

AGREE = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def setup():
    schedule, gm = Schedule.course(), GaussianMixture.small()
    x_T = torch.randn((16, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return schedule, gm.eps_fn(schedule), x_T


def trained_betas(schedule: Schedule) -> list[float]:
    """diffusers betas over j = 0..T-1 whose cumulative product is our ab_{j+1}."""
    betas = schedule.betas[1:].clone()
    betas[0] = 1.0 - schedule.alphas_cumprod[1]
    return betas.tolist()


def diffusers_model(eps_fn):
    """eps for diffusers: its (integer-valued) index j is our t = j + 1."""

    def model(x: torch.Tensor, j) -> torch.Tensor:
        t = int(round(float(j))) + 1
        assert abs(float(j) + 1 - t) < 1e-6, f"diffusers asked for a fractional timestep {float(j)}"
        return call_eps(eps_fn, x, t)

    return model


def their_timesteps(ts: list[int]) -> list[int]:
    return [t - 1 for t in ts[:-1]]


def run_scheduler(scheduler, eps_fn, x: torch.Tensor, scale_input: bool = False, **step_kwargs):
    """The usual diffusers loop; returns the final sample and the sample before each model call."""
    model, seen = diffusers_model(eps_fn), []
    for j in scheduler.timesteps:
        seen.append(x)
        model_in = scheduler.scale_model_input(x, j) if scale_input else x
        x = scheduler.step(model(model_in, j), j, x, **step_kwargs).prev_sample
    return x, seen


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def test_mapping_reproduces_our_alphas_cumprod():
    schedule = Schedule.course()
    scheduler = DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule))
    ours = schedule.alphas_cumprod[1:].float()
    torch.testing.assert_close(scheduler.alphas_cumprod, ours, rtol=1e-6, atol=0)


@pytest.mark.parametrize("steps", [10, 20, 25])
def test_ddim(setup, steps):
    schedule, eps_fn, x_T = setup
    scheduler = DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule),
                              clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    ts = schedule.timesteps(steps, "trailing")
    assert scheduler.timesteps.tolist() == their_timesteps(ts)
    theirs, _ = run_scheduler(scheduler, eps_fn, x_T, eta=0.0)
    assert max_diff(theirs, SAMPLERS["ddim"](eps_fn, x_T, schedule, steps=steps)) < AGREE


def noise_draws(seed: int, shape: torch.Size, count: int) -> list[torch.Tensor]:
    """The first `count` float64 draws of shape `shape` from the stream a sampler given Generator(seed) uses."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(count)]


@pytest.mark.parametrize("eta", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("steps", [10, 20])  # diffusers DDIM steps by T // steps: grids that divide T
def test_ddim_with_noise(setup, steps, eta):
    """Stochastic DDIM against diffusers' with the same injected noise: sigma = eta * (posterior std), not
    sqrt(eta) * ...; our sampler draws no noise on its last step (sigma = 0 there), diffusers multiplies its by 0."""
    schedule, eps_fn, x_T = setup
    scheduler = DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule),
                              clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    draws = noise_draws(3, x_T.shape, steps - 1) + [torch.zeros_like(x_T)]
    model, x = diffusers_model(eps_fn), x_T
    for j, z in zip(scheduler.timesteps, draws):
        x = scheduler.step(model(x, j), j, x, eta=eta, variance_noise=z).prev_sample
    ours = SAMPLERS["ddim"](eps_fn, x_T, schedule, steps=steps, eta=eta, generator=torch.Generator().manual_seed(3))
    assert max_diff(x, ours) < AGREE
    deterministic = SAMPLERS["ddim"](eps_fn, x_T, schedule, steps=steps)
    assert max_diff(ours, deterministic) > 100 * AGREE  # the noise was used


DDPM_VARIANCE = {"course": "fixed_large", "posterior": "fixed_small"}
DDPM_AGREE = 1e-4  # diffusers' float32 alphas, amplified by 1 / sqrt(1 - ab_t) at the smallest t of a 500-step chain


@pytest.mark.parametrize("variance", ["course", "posterior"])
@pytest.mark.parametrize("steps", [50, 37, 500])
def test_ddpm_with_noise(setup, steps, variance):
    """DDPM against diffusers' with the same noise stream, step by step on a skipped grid too. diffusers adds
    noise whenever its index j > 0, i.e. our t > 1: the lab's rule, right only at steps = T. On a skipped grid
    (last kept t > 1) the jump to clean data must add none, so there ours equals diffusers' step minus its noise."""
    schedule, eps_fn, x_T = setup
    ts = schedule.timesteps(steps, "trailing")
    scheduler = DDPMScheduler(num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule),
                              variance_type=DDPM_VARIANCE[variance], clip_sample=False)
    scheduler.set_timesteps(timesteps=their_timesteps(ts))
    states = []
    ours = SAMPLERS["ddpm"](eps_fn, x_T, schedule, steps=steps, variance=variance,
                            generator=torch.Generator().manual_seed(5), callback=lambda info: states.append(info.x_t))
    states.append(ours)
    draws = noise_draws(5, x_T.shape, steps)
    model = diffusers_model(eps_fn)
    for i, j in enumerate(scheduler.timesteps):
        generator = torch.Generator().manual_seed(5)
        for _ in range(i):  # the stream's position at step i: one draw per earlier step
            torch.randn(x_T.shape, generator=generator, dtype=torch.float64)
        theirs = scheduler.step(model(states[i], j), j, states[i], generator=generator).prev_sample
        if ts[i + 1] > 0 or ts[i] == 1:
            assert max_diff(theirs, states[i + 1]) < DDPM_AGREE, i
        else:
            their_noise = scheduler._get_variance(j).double().sqrt() * draws[i]
            assert max_diff(theirs - their_noise, states[i + 1]) < DDPM_AGREE, i
            if variance == "course":  # the posterior's std is 0 at s = 0 anyway
                assert their_noise.abs().max().item() > 100 * DDPM_AGREE  # the last step's noise would be visible


def dpm_solver(schedule: Schedule, order: int, ts: list[int]) -> DPMSolverMultistepScheduler:
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule), algorithm_type="dpmsolver++",
        solver_order=order, solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero",
        thresholding=False, euler_at_final=False)
    scheduler.set_timesteps(timesteps=their_timesteps(ts))
    return scheduler


@pytest.mark.parametrize("spacing", ["logsnr", "karras", "trailing"])
@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_2m(setup, spacing, steps):
    schedule, eps_fn, x_T = setup
    ts = schedule.timesteps(steps, spacing)
    theirs, _ = run_scheduler(dpm_solver(schedule, 2, ts), eps_fn, x_T)
    ours = SAMPLERS["dpmpp-2m"](eps_fn, x_T, schedule, steps=steps, spacing=spacing)
    assert max_diff(theirs, ours) < AGREE


@pytest.mark.parametrize("steps", [10, 14, 15, 20])  # 14 | 15: the lower-order-final boundary
def test_dpm_solver_3m_step_by_step(setup, steps):
    """Fed our state at every step, diffusers' 3M step equals ours on its first- and second-order steps; on its
    third-order steps it differs by exactly alpha_t w_2 f[l0, l1, l2], i.e. it weights the x0'' term half as
    much as the exact integral of the quadratic through the last three x0_hat (w_2 x0'', x0'' = 2 f[l0, l1, l2]).
    That makes it second order (see docs/solvers.md); ours is exact for quadratic x0_hat (test_solvers.py)."""
    schedule, eps_fn, x_T = setup
    ts = schedule.timesteps(steps, "logsnr")
    states, x0s = [], []
    SAMPLERS["dpmpp-3m"](eps_fn, x_T, schedule, steps=steps,
                         callback=lambda info: (states.append(info.x_t), x0s.append(info.x0_hat)))
    states.append(SAMPLERS["dpmpp-3m"](eps_fn, x_T, schedule, steps=steps))
    scheduler, model = dpm_solver(schedule, 3, ts), diffusers_model(eps_fn)
    lambdas = [schedule.log_snr(t) for t in ts]
    third_order_steps, largest = 0, 0.0
    for i, j in enumerate(scheduler.timesteps):
        theirs = scheduler.step(model(states[i], j), j, states[i]).prev_sample
        ours = states[i + 1]
        third = i >= 2 and ts[i + 1] > 0 and not (steps < 15 and i == steps - 2)
        if not third:
            assert max_diff(theirs, ours) < AGREE, i
            continue
        third_order_steps += 1
        l0, l1, l2 = lambdas[i], lambdas[i - 1], lambdas[i - 2]
        dd_012 = ((x0s[i] - x0s[i - 1]) / (l0 - l1) - (x0s[i - 1] - x0s[i - 2]) / (l1 - l2)) / (l0 - l2)
        w2 = exp_weights(lambdas[i + 1] - l0)[2]
        predicted = math.sqrt(schedule.alpha_bar(ts[i + 1])) * w2 * dd_012
        assert max_diff(ours - theirs, predicted) < AGREE, i
        largest = max(largest, predicted.abs().max().item())
    assert third_order_steps == steps - 3 - (steps < 15)
    assert largest > 10 * AGREE  # the checks above are not vacuous


def unipc(schedule: Schedule, order: int, ts: list[int], spacing: str) -> UniPCMultistepScheduler:
    """UniPC's set_timesteps takes no custom grid: a trailing grid is its own "trailing" spacing; any other
    grid is written into its timesteps and sigmas (our exact sigma at each integer t, then 0) after it."""
    steps = len(ts) - 1
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule), solver_order=order,
        solver_type="bh2", predict_x0=True, lower_order_final=True, final_sigmas_type="zero", thresholding=False,
        disable_corrector=[], timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    if spacing == "trailing":
        assert scheduler.timesteps.tolist() == their_timesteps(ts)
    else:
        scheduler.timesteps = torch.tensor(their_timesteps(ts))
        scheduler.sigmas = torch.tensor([schedule.sigma(t) for t in ts[:-1]] + [0.0], dtype=torch.float32)
    return scheduler


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("spacing", ["logsnr", "trailing"])
def test_unipc(setup, order, spacing):
    schedule, eps_fn, x_T = setup
    steps = 10
    ts = schedule.timesteps(steps, spacing)
    theirs, _ = run_scheduler(unipc(schedule, order, ts, spacing), eps_fn, x_T)
    ours = SAMPLERS["unipc"](eps_fn, x_T, schedule, steps=steps, order=order, spacing=spacing)
    assert max_diff(theirs, ours) < AGREE


@pytest.mark.parametrize("spacing", ["karras", "logsnr"])
def test_euler(setup, spacing):
    """With the grid's integer timesteps, diffusers' sigmas are our exact sigmas (it interpolates at integers)."""
    schedule, eps_fn, x_T = setup
    ts = schedule.timesteps(10, spacing)
    scheduler = EulerDiscreteScheduler(num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule),
                                       final_sigmas_type="zero", interpolation_type="linear")
    scheduler.set_timesteps(timesteps=their_timesteps(ts))
    x_ve = x_T * math.sqrt(1.0 + schedule.sigma(ts[0]) ** 2)
    theirs, _ = run_scheduler(scheduler, eps_fn, x_ve, scale_input=True)
    assert max_diff(theirs, SAMPLERS["euler"](eps_fn, x_T, schedule, steps=10, spacing=spacing)) < AGREE


@pytest.mark.parametrize("spacing", ["karras", "logsnr"])
def test_heun(setup, spacing):
    """diffusers' Heun makes 2 S - 1 calls on S timesteps, its last step to sigma = 0 being Euler, as ours."""
    schedule, eps_fn, x_T = setup
    ts = schedule.timesteps(10, spacing)
    scheduler = HeunDiscreteScheduler(num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule))
    scheduler.set_timesteps(timesteps=their_timesteps(ts))
    assert len(scheduler.timesteps) == 2 * 10 - 1
    x_ve = x_T * math.sqrt(1.0 + schedule.sigma(ts[0]) ** 2)
    theirs, _ = run_scheduler(scheduler, eps_fn, x_ve, scale_input=True)
    assert max_diff(theirs, SAMPLERS["heun"](eps_fn, x_T, schedule, steps=10, spacing=spacing)) < AGREE


@pytest.mark.parametrize("steps", [10, 20])
def test_pndm_plms(setup, steps):
    """PNDMScheduler(skip_prk_steps=True) is our plms(warmup="heun") on its uniform trailing grid: the same
    states at every grid time. Its final jump to clean uses the Adams-Bashforth eps' where ours takes x0_hat:
    checked here against that formula, computed from our own eps."""
    schedule, eps_fn, x_T = setup
    ts = schedule.timesteps(steps, "trailing")
    scheduler = PNDMScheduler(num_train_timesteps=schedule.T, trained_betas=trained_betas(schedule),
                              skip_prk_steps=True, set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    theirs, seen = run_scheduler(scheduler, eps_fn, x_T)
    their_states = [seen[0]] + seen[2:]  # call 1 is the Heun warm-up's evaluation at its Euler prediction
    assert [int(j) for j in scheduler.timesteps] == [their_timesteps(ts)[0]] + their_timesteps(ts)[1:2] * 2 + \
        their_timesteps(ts)[2:]
    infos = []
    ours = SAMPLERS["plms"](eps_fn, x_T, schedule, steps=steps, spacing="trailing", warmup="heun",
                            callback=infos.append)
    assert max(max_diff(a, info.x_t) for a, info in zip(their_states, infos)) < AGREE
    eps = [call_eps(eps_fn, info.x_t, info.t) for info in infos[-4:]]
    eps_prime = (55 * eps[3] - 59 * eps[2] + 37 * eps[1] - 9 * eps[0]) / 24
    assert max_diff(theirs, predict_x0(infos[-1].x_t, eps_prime, schedule.alpha_bar(ts[-2]))) < AGREE
    assert max_diff(ours, predict_x0(infos[-1].x_t, eps[3], schedule.alpha_bar(ts[-2]))) < 1e-12
