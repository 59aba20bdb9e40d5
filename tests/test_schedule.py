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
