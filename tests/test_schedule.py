import math

import numpy as np
import pytest
import torch

from spritediff.errors import SpriteDiffError
from spritediff.schedule import SPACINGS, Schedule

SCHED = Schedule.course()


def test_course_schedule_values():
    b = np.linspace(1e-4, 0.02, 501)
    ab = np.cumprod(1 - b)
    ab[0] = 1.0
    assert SCHED.T == 500
    np.testing.assert_allclose(SCHED.alphas_cumprod.numpy(), ab, rtol=1e-12)
    assert SCHED.alpha_bar(0) == 1.0 and SCHED.sigma(0) == 0.0
    assert SCHED.log_snr(0) == float("inf")


@pytest.mark.parametrize("steps", [1, 2, 4, 5, 10, 20, 25, 50, 100, 125, 250, 500])
def test_trailing_equals_course_range_for_divisors(steps):
    assert SCHED.timesteps(steps, "trailing") == list(range(500, 0, -500 // steps)) + [0]


@pytest.mark.parametrize("spacing", SPACINGS)
def test_every_step_count_gives_a_valid_grid(spacing):
    for steps in range(1, 501):
        ts = SCHED.timesteps(steps, spacing)
        assert len(ts) == steps + 1 and ts[-1] == 0 and ts[0] <= 500
        assert all(a > b for a, b in zip(ts, ts[1:])), (steps, ts)


def test_spacings_differ_as_documented():
    assert SCHED.timesteps(30, "trailing")[0] == 500
    assert SCHED.timesteps(30, "leading")[:2] == [480, 464]
    assert SCHED.timesteps(10, "linspace")[-2:] == [1, 0]
    assert SCHED.timesteps(10, "logsnr")[-2:] == [1, 0] and SCHED.timesteps(10, "logsnr")[0] == 500
    lam = [SCHED.log_snr(t) for t in SCHED.timesteps(20, "logsnr")[:-1]]
    gaps = np.diff(lam)[:-4]  # the last few are bent by rounding to integers near t = 1
    assert np.ptp(gaps) < 0.15 * np.mean(gaps)  # uniform in log-SNR
    quad = SCHED.timesteps(10, "quadratic")
    assert quad[:3] == [500, 405, 320]


@pytest.mark.parametrize("steps", [0, -3, 501])
def test_bad_step_counts_are_value_errors_in_the_numerics(steps):
    """The numerics raise ValueError; the edge (sample, the CLI) checks first and says it in one line."""
    with pytest.raises(ValueError, match="steps must be between 1 and T=500") as info:
        SCHED.timesteps(steps)
    assert not isinstance(info.value, SpriteDiffError)


def test_unknown_spacing():
    with pytest.raises(ValueError, match="unknown spacing 'cubic'") as info:
        SCHED.timesteps(10, "cubic")
    assert not isinstance(info.value, SpriteDiffError)


def test_sigmas_increase_from_zero():
    ab = SCHED.alphas_cumprod.numpy()
    np.testing.assert_allclose(SCHED.sigmas().numpy(), np.sqrt((1 - ab) / ab), rtol=1e-12, atol=0)
    assert SCHED.sigmas()[0] == 0 and torch.all(SCHED.sigmas()[1:] > SCHED.sigmas()[:-1])


def test_rescaled_terminal_snr_keeps_the_start_and_lands_on_its_snr():
    """Lin et al.'s rescale: sqrt(ab_t) mapped affinely for t >= 1, so ab_1 is the course's, the SNR at T is the one
    asked for, ab still decreases, and the betas stored beside it multiply up to it."""
    rescaled = Schedule.course(terminal_snr=1e-5)
    ab = rescaled.alphas_cumprod
    assert ab[0] == 1.0 and ab[1] == pytest.approx(SCHED.alpha_bar(1), rel=1e-14)
    assert float(ab[500] / (1 - ab[500])) == pytest.approx(1e-5, rel=1e-9)
    assert torch.all(ab[1:] < ab[:-1])
    root, course_root = ab[1:].sqrt(), SCHED.alphas_cumprod[1:].sqrt()
    slope = torch.diff(root) / torch.diff(course_root)  # affine in sqrt(ab): one slope everywhere
    assert float(slope.max() - slope.min()) < 1e-9
    rebuilt = torch.cumprod(1.0 - rescaled.betas, dim=0)[1:]
    torch.testing.assert_close(rebuilt, ab[1:], rtol=1e-12, atol=0)
    assert math.isfinite(rescaled.sigma(500)) and math.isfinite(rescaled.log_snr(500))


def test_rescaled_schedule_round_trips_through_its_config():
    rescaled = Schedule.course(terminal_snr=2e-4)
    config = rescaled.to_config()
    assert config["terminal_snr"] == 2e-4 and "terminal_snr" not in SCHED.to_config()
    again = Schedule.from_config(config)
    assert torch.equal(again.alphas_cumprod, rescaled.alphas_cumprod) and again.terminal_snr == 2e-4


@pytest.mark.parametrize("snr", [0.0, -1e-5, 0.0064, 1.0])
def test_a_terminal_snr_not_below_the_schedules_own_is_refused(snr):
    with pytest.raises(ValueError, match="terminal_snr must be above 0 and below the schedule's own 0.00633"):
        Schedule.course(terminal_snr=snr)
