"""The few-step solvers against the Gaussian-mixture oracle: exact identities, model-call counts, and measured
convergence orders (log-log slope of the max error against the probability-flow ODE solution over steps)."""
from __future__ import annotations

import bisect
import inspect
import math

import numpy as np
import pytest
import torch

from oracle import GaussianMixture
from spritediff.engine import CountingEps
from spritediff.samplers import REGISTRY, SAMPLERS
from spritediff.samplers.common import call_eps, predict_x0
from spritediff.samplers.dpmpp import dpmpp_update, sample_dpmpp
from spritediff.samplers.unipc import unipc_update
from spritediff.schedule import Schedule

NEW_SAMPLERS = ("dpmpp-2m", "dpmpp-3m", "unipc", "euler", "heun", "plms")
ORDER_STEPS = (12, 16, 20, 24, 28, 32)  # logsnr grids up to 32 steps round to integers without collisions
FINE_STEPS = (32, 45, 64, 90, 128, 181, 256)
TOLERANCE = 0.35

# (sampler, its own options, expected order)
ORDER_CASES = [
    ("ddim", {}, 1.0),
    ("euler", {}, 1.0),
    ("heun", {}, 2.0),
    ("dpmpp-2m", {}, 2.0),
    ("dpmpp-3m", {}, 3.0),
    ("unipc", {}, 3.0),  # UniPC-2: UniP-2 + UniC-2 is order p + 1 = 3
    ("unipc", {"order": 1}, 2.0),
    ("unipc", {"order": 3}, 4.0),
    ("unipc", {"corrector": False}, 2.0),
    ("plms", {}, 2.0),
    ("plms", {"warmup": "heun"}, 2.0),
]


class Case:
    """An oracle, a schedule, 64 starting points x_T at t = T (float64) and the exact references:
    to_t1 = the ODE solution from ab(T) to ab(1) followed by the final denoise x0_hat at t = 1 (what a grid
    ending ..., 1, 0 must converge to), to_t0 = the ODE solution all the way to ab = 1 (for grids ending T/S, 0).
    """

    def __init__(self, schedule: Schedule, std: float):
        self.schedule, self.gm = schedule, GaussianMixture.small(std)
        self.eps = self.gm.eps_fn(schedule)
        self.x_T = torch.randn((64, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        ab_T, ab_1 = schedule.alpha_bar(schedule.T), schedule.alpha_bar(1)
        x_1 = self.gm.ode_solution(self.x_T, ab_T, ab_1)
        self.to_t1 = predict_x0(x_1, call_eps(self.eps, x_1, 1), ab_1)
        self.to_t0 = self.gm.ode_solution(self.x_T, ab_T, 1.0)

    def measured_order(self, name: str, options: dict, steps_list) -> tuple[float, list[float]]:
        trailing = options.get("spacing", "trailing" if name == "ddim" else None) == "trailing"
        reference = self.to_t0 if trailing else self.to_t1
        errors = [(SAMPLERS[name](self.eps, self.x_T, self.schedule, steps=s, **options) - reference).abs().max().item()
                  for s in steps_list]
        return -np.polyfit(np.log(steps_list), np.log(errors), 1)[0], errors


@pytest.fixture(scope="module")
def course_case():
    """The course schedule and a mixture std of 0.5. Steps 12..32: beyond 32 a logsnr grid needs steps finer
    than one integer t near t = 1 (there one t spans ~0.2 in lambda), the rounding pushes points apart and the
    third-order solvers' slopes sag to ~2.2 by 80 steps. With the oracle's default std 0.3 the flow is sharper
    and 32 steps are not yet asymptotic (3M measures ~2.3); the fine case below covers std 0.3."""
    return Case(Schedule.course(), 0.5)


@pytest.fixture(scope="module")
def fine_case():
    """The same continuous schedule on ten times as many integer t (T = 5000, betas / 10) and the default std
    0.3: the middle of a grid rounds like one of a tenth the steps, so steps 32..256 show the asymptotic orders.
    Near t = 1 one integer t still spans ~0.2 in lambda (for any linear schedule), so from 64 steps the logsnr
    grid is pushed apart there; x0_hat barely moves at such low noise, and only UniPC-3 (order 4, errors ~1e-6)
    reaches that floor, so it is left out here."""
    return Case(Schedule.course(5000, 1e-5, 2e-3), 0.3)


def _x0_hat(eps_fn, x, schedule, t):
    return predict_x0(x, call_eps(eps_fn, x, t), schedule.alpha_bar(t))


def test_registry_has_the_new_samplers_with_ten_default_steps():
    for name in NEW_SAMPLERS:
        assert name in SAMPLERS and REGISTRY[name].default_steps == 10


def course_log_sigmas() -> list[float]:
    """log sigma_t = 0.5 log((1 - ab_t) / ab_t) = -lambda_t for t = 1..500 of the course schedule, increasing,
    from its definition (docs/design.md 4.1), not from Schedule."""
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 501))[1:]
    return [0.5 * math.log((1 - a) / a) for a in ab]


def t_where(table: list[float], value: float) -> float:
    """The continuous t in 1..T at which an increasing table (table[i] belongs to t = i + 1) takes `value`: the
    two integer t around it by bisection, then the straight line between them."""
    i = bisect.bisect_left(table, value)  # table[i - 1] < value <= table[i], at t = i and t = i + 1
    if i == 0:
        return 1.0
    if i == len(table):
        return float(len(table))
    return i + (value - table[i - 1]) / (table[i] - table[i - 1])


def hand_grid(spacing: str, steps: int) -> list[int]:
    """The model times of a karras or logsnr grid, stated from the definitions in docs/design.md 4.5 and rounded
    half up: Karras sigmas (rho = 7) from sigma(T) to sigma(1), or uniform lambda from lambda_T to lambda_1, each
    mapped to t by log-sigma interpolation."""
    log_sigma = course_log_sigmas()
    ramp = [k / (steps - 1) if steps > 1 else 0.0 for k in range(steps)]
    if spacing == "karras":
        hi, lo = math.exp(log_sigma[-1]) ** (1 / 7), math.exp(log_sigma[0]) ** (1 / 7)
        values = [7 * math.log(hi + r * (lo - hi)) for r in ramp]
    else:  # logsnr: lambda from -log_sigma[-1] to -log_sigma[0], as log sigma = -lambda
        values = [log_sigma[-1] + r * (log_sigma[0] - log_sigma[-1]) for r in ramp]
    return [math.floor(t_where(log_sigma, v) + 0.5) for v in values]


def test_karras_spacing():
    schedule = Schedule.course()
    for steps in range(1, 58):  # up to 57 steps the rounded Karras times are distinct: nothing is pushed apart
        assert schedule.timesteps(steps, "karras") == hand_grid("karras", steps) + [0], steps
    ts = schedule.timesteps(10, "karras")
    assert ts[0] == 500 and ts[-2:] == [1, 0]
    sigmas = schedule.karras_sigmas(10)
    assert sigmas[0] == pytest.approx(schedule.sigma(500), rel=1e-12)
    assert sigmas[-1] == pytest.approx(schedule.sigma(1), rel=1e-12)
    ramp = sigmas ** (1 / 7)
    np.testing.assert_allclose(np.diff(ramp), np.diff(ramp)[0], rtol=1e-9)  # uniform in sigma^(1/rho)
    for steps in (1, 2, 3, 57, 64, 250, 499, 500):
        ts = schedule.timesteps(steps, "karras")
        assert len(ts) == steps + 1 and ts[-1] == 0 and ts[0] == 500
        assert all(a > b for a, b in zip(ts, ts[1:]))
    assert schedule.timesteps(20, "trailing") == list(range(500, -1, -25))  # existing spacings unchanged


@pytest.mark.parametrize("spacing, steps_list", [("logsnr", ORDER_STEPS), ("karras", ORDER_STEPS)])
def test_order_grids_round_without_collisions(spacing, steps_list):
    """On the steps used for the orders, the hand-computed grid rounds to distinct integer t (so nothing needs
    pushing apart) and the sampler's grid is exactly it: the solvers run on the intended grid."""
    schedule = Schedule.course()
    for steps in steps_list:
        wanted = hand_grid(spacing, steps)
        assert wanted[0] == 500 and wanted[-1] == 1 and all(a > b for a, b in zip(wanted, wanted[1:])), wanted
        assert schedule.timesteps(steps, spacing) == wanted + [0]


@pytest.mark.parametrize("name, options, calls", [
    ("dpmpp-2m", {}, lambda s: s), ("dpmpp-3m", {}, lambda s: s), ("unipc", {}, lambda s: s),
    ("unipc", {"order": 3}, lambda s: s), ("euler", {}, lambda s: s), ("heun", {}, lambda s: 2 * s - 1),
    ("plms", {}, lambda s: s), ("plms", {"warmup": "heun"}, lambda s: s + (s > 1)),
])
@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_model_calls_and_callbacks(name, options, calls, steps):
    schedule, gm = Schedule.course(), GaussianMixture.small()
    eps = CountingEps(gm.eps_fn(schedule))
    infos = []
    x_T = torch.randn((3, 1, 2, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = SAMPLERS[name](eps, x_T, schedule, steps=steps, callback=infos.append, **options)
    ts = schedule.timesteps(steps, _default_spacing(name))
    assert eps.calls == calls(steps)
    assert [i.index for i in infos] == list(range(steps)) and [i.t for i in infos] == ts[:-1]
    for info in infos:  # each record is a consistent pair: x0_hat is the model's prediction from x_t
        torch.testing.assert_close(info.x0_hat, _x0_hat(eps.eps_fn, info.x_t, schedule, info.t), atol=1e-12, rtol=0)
    assert x0.shape == x_T.shape and x0.dtype == x_T.dtype


def _default_spacing(name: str) -> str:
    return inspect.signature(SAMPLERS[name]).parameters["spacing"].default


def test_default_grids():
    assert {n: _default_spacing(n) for n in NEW_SAMPLERS} == {
        "dpmpp-2m": "logsnr", "dpmpp-3m": "logsnr", "unipc": "logsnr", "euler": "karras", "heun": "karras",
        "plms": "logsnr"}


@pytest.mark.parametrize("name", NEW_SAMPLERS)
@pytest.mark.parametrize("steps", [1, 10])
def test_final_step_is_the_denoise_x0_hat(name, steps):
    """The final step to t = 0 (sigma = 0, lambda = inf) is x0_hat at the last model time, for every solver."""
    schedule, gm = Schedule.course(), GaussianMixture.small()
    eps = gm.eps_fn(schedule)
    x_T = torch.randn((5, 1, 2, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    infos = []
    x0 = SAMPLERS[name](eps, x_T, schedule, steps=steps, callback=infos.append)
    last = infos[-1]
    torch.testing.assert_close(x0, _x0_hat(eps, last.x_t, schedule, last.t), atol=1e-12, rtol=0)
    if steps == 1:
        torch.testing.assert_close(x0, _x0_hat(eps, x_T, schedule, schedule.T), atol=1e-12, rtol=0)


@pytest.mark.parametrize("spacing", ["karras", "logsnr", "trailing"])
def test_exact_identities(spacing):
    """Euler in the k-diffusion view is DDIM; order-1 DPM-Solver++ is DDIM; UniP-2 (bh2) is DPM-Solver++(2M);
    UniP-3 (bh2, its coefficients from a linear solve) is our 3M (from divided differences)."""
    schedule, gm = Schedule.course(), GaussianMixture.small()
    eps = gm.eps_fn(schedule)
    x_T = torch.randn((16, 1, 2, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for steps in (5, 14):
        ddim = SAMPLERS["ddim"](eps, x_T, schedule, steps=steps, spacing=spacing)
        same = {
            "euler": SAMPLERS["euler"](eps, x_T, schedule, steps=steps, spacing=spacing),
            "dpmpp order 1": sample_dpmpp(eps, x_T, schedule, steps, order=1, spacing=spacing),
            "unipc order 1 without corrector": SAMPLERS["unipc"](eps, x_T, schedule, steps=steps, order=1,
                                                                 corrector=False, spacing=spacing),
        }
        for label, x in same.items():
            torch.testing.assert_close(x, ddim, atol=1e-12, rtol=0, msg=label)
        for order, name in ((2, "dpmpp-2m"), (3, "dpmpp-3m")):
            unip = SAMPLERS["unipc"](eps, x_T, schedule, steps=steps, order=order, corrector=False, spacing=spacing)
            torch.testing.assert_close(unip, SAMPLERS[name](eps, x_T, schedule, steps=steps, spacing=spacing),
                                       atol=1e-12, rtol=0)


def _exact_step(coeffs: np.ndarray, x: torch.Tensor, ab_s: float, ab_t: float) -> torch.Tensor:
    """The exact step of the ODE when x0_hat(lambda) = sum_k coeffs[k] lambda^k (each (1,C,H,W)), whatever x:
    x_t = (sigma_t / sigma_s) x_s + sigma_t [F(lambda_t) - F(lambda_s)], F = e^lambda sum_j (-1)^j p^(j)."""

    def antiderivative(lam: float) -> np.ndarray:
        n = len(coeffs)
        derivs = [sum(coeffs[k] * math.factorial(k) / math.factorial(k - j) * lam ** (k - j) for k in range(j, n))
                  for j in range(n)]  # p^(j)(lam)
        return math.exp(lam) * sum((-1) ** j * d for j, d in enumerate(derivs))

    lam = [0.5 * math.log(ab / (1 - ab)) for ab in (ab_s, ab_t)]
    sigma_s, sigma_t = math.sqrt(1 - ab_s), math.sqrt(1 - ab_t)
    jump = torch.from_numpy(antiderivative(lam[1]) - antiderivative(lam[0]))
    return sigma_t / sigma_s * x + sigma_t * jump


@pytest.mark.parametrize("degree, update, variant", [(2, "dpmpp order 3", None)] + [
    (degree, update, variant) for degree, update in [
        (2, "unipc predictor order 3"), (2, "unipc corrector order 2"), (3, "unipc corrector order 3")]
    for variant in ("bh1", "bh2")])
def test_single_step_is_exact_for_polynomial_x0(degree, update, variant):
    """If x0_hat is a polynomial in lambda (here independent of x), a step of order p integrates it exactly up to
    degree p - 1: the third-order DPM-Solver++ step must get the x0'' term right, not just its leading order."""
    schedule = Schedule.course()
    rng = np.random.default_rng(4)
    coeffs = rng.normal(size=(degree + 1, 1, 1, 2, 2))
    x = torch.from_numpy(rng.normal(size=(1, 1, 2, 2)))
    ts, target = [320, 260, 200], 150
    lambdas = [schedule.log_snr(t) for t in ts]
    x0_of = lambda lam: torch.from_numpy(sum(c * lam**k for k, c in enumerate(coeffs)))
    x0s = [x0_of(lam) for lam in lambdas]
    ab_s, ab_t, lambda_t = schedule.alpha_bar(ts[-1]), schedule.alpha_bar(target), schedule.log_snr(target)
    exact = _exact_step(coeffs, x, ab_s, ab_t)
    if update == "dpmpp order 3":
        got = dpmpp_update(x, lambdas, x0s, lambda_t, ab_s, ab_t)
    elif update == "unipc predictor order 3":
        got = unipc_update(x, lambdas, x0s, lambda_t, ab_s, ab_t, variant)
    elif update == "unipc corrector order 2":
        got = unipc_update(x, lambdas[1:], x0s[1:], lambda_t, ab_s, ab_t, variant, x0_next=x0_of(lambda_t))
    else:
        got = unipc_update(x, lambdas, x0s, lambda_t, ab_s, ab_t, variant, x0_next=x0_of(lambda_t))
    torch.testing.assert_close(got, exact, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name, options, expected", ORDER_CASES)
def test_convergence_order_course_schedule(course_case, name, options, expected):
    order, errors = course_case.measured_order(name, options, ORDER_STEPS)
    assert abs(order - expected) < TOLERANCE, (order, errors)
    assert errors[-1] < errors[0]


@pytest.mark.parametrize("name, options, expected", [c for c in ORDER_CASES if c[1].get("order") != 3])
def test_convergence_order_fine_schedule(fine_case, name, options, expected):
    order, errors = fine_case.measured_order(name, options, FINE_STEPS)
    assert abs(order - expected) < TOLERANCE, (order, errors)


def test_float32_in_float32_out():
    schedule, gm = Schedule.course(), GaussianMixture.small()
    x_T = torch.randn((4, 1, 2, 2), generator=torch.Generator().manual_seed(5))
    reference = SAMPLERS["dpmpp-2m"](gm.eps_fn(schedule), x_T.double(), schedule)
    for name in NEW_SAMPLERS:
        x0 = SAMPLERS[name](gm.eps_fn(schedule), x_T, schedule)
        assert x0.dtype == torch.float32 and torch.isfinite(x0).all()
    x0 = SAMPLERS["dpmpp-2m"](gm.eps_fn(schedule), x_T, schedule)
    torch.testing.assert_close(x0.double(), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_plms_combines_eps_with_adams_bashforth_coefficients_exactly(monkeypatch, degree):
    """Adams-Bashforth of order p integrates a polynomial of degree p - 1 in the step index exactly:
    sum_j b_j q(i - j) = integral of q from i to i + 1. With eps = q(step index), the eps' that PLMS hands
    to its transfer step must be that integral from step `degree` on (orders 1, 2, 3 in the warm-up, then 4),
    which pins all ten coefficients; a method of lower order fails from the step where it falls short."""
    import spritediff.samplers.plms as plms

    schedule, steps = Schedule.course(), 12
    grid = schedule.timesteps(steps, "logsnr")
    coefficients = np.random.default_rng(degree).normal(size=degree + 1)  # q(u) = sum_k c_k u^k
    index_of = {int(t): i for i, t in enumerate(grid)}
    used = []
    monkeypatch.setattr(plms, "transfer", lambda x, eps, ab_t, ab_s: used.append(float(eps.flatten()[0])) or x)

    def eps_fn(x, t):
        return torch.full_like(x, float(np.polyval(coefficients[::-1], index_of[int(t[0])])))

    SAMPLERS["plms"](eps_fn, torch.zeros(1, 1, 1, 1, dtype=torch.float64), schedule, steps=steps)
    antiderivative = np.polyint(coefficients[::-1])
    exact = [np.polyval(antiderivative, i + 1) - np.polyval(antiderivative, i) for i in range(len(used))]
    assert len(used) == steps - 1  # every step but the last, which lands on x0_hat
    np.testing.assert_allclose(used[degree:], exact[degree:], rtol=1e-12, atol=1e-12)
