"""Samplers on a caller's own grid (timesteps=[...]): the same samples as on the built-in grid with the same points,
and bad grids refused with one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import GaussianMixture

from spritediff.errors import SpriteDiffError
from spritediff.samplers import SAMPLERS
from spritediff.checks import check_timesteps
from spritediff.schedule import SPACINGS, Schedule

SCHEDULE = Schedule.course()
EPS = GaussianMixture.small().eps_fn(SCHEDULE)


def x_T(n: int = 8) -> torch.Tensor:
    """(n,1,2,2) float64 starting noise for the oracle's small mixture."""
    return torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def run(sampler: str, **kwargs) -> tuple[torch.Tensor, list[int]]:
    """The sample (n,1,2,2) and the times the callback saw."""
    seen = []
    out = SAMPLERS[sampler](EPS, x_T(), SCHEDULE, generator=torch.Generator().manual_seed(1),
                            callback=lambda info: seen.append(info.t), **kwargs)
    return out, seen


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 7, 20])
def test_ddim_on_a_written_out_grid_is_ddim_on_that_spacing(spacing, steps):
    grid = SCHEDULE.timesteps(steps, spacing)
    built_in, seen = run("ddim", steps=steps, spacing=spacing)
    custom, seen_custom = run("ddim", timesteps=grid)
    assert torch.equal(custom, built_in) and seen_custom == seen == grid[:-1]


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_takes_a_grid_and_its_length_sets_the_steps(sampler):
    """steps is unused with a grid: the solvers that lower their order near the end (dpmpp, unipc) count from the
    grid, so steps=10 with a 5-step grid is the 5-step built-in run."""
    grid = SCHEDULE.timesteps(5, "logsnr")
    built_in, _ = run(sampler, steps=5, spacing="logsnr")
    custom, seen = run(sampler, steps=10, timesteps=grid)
    assert torch.equal(custom, built_in) and seen == grid[:-1]


@pytest.mark.parametrize("grid", [[500, 300, 120, 40, 7, 0], (499, 0), np.array([250, 100, 1, 0]),
                                  torch.tensor([480, 20, 0]), [np.int64(9), 3, 0]])
def test_any_decreasing_grid_of_ints_is_walked_as_given(grid):
    out, seen = run("ddim", timesteps=grid)
    assert seen == [int(t) for t in grid][:-1] and torch.isfinite(out).all()


def test_a_grid_of_two_points_is_one_ddim_step_to_x0_hat():
    out, _ = run("ddim", timesteps=[123, 0])
    ab = SCHEDULE.alpha_bar(123)
    eps = EPS(x_T(), torch.full((8,), 123))
    torch.testing.assert_close(out, (x_T() - (1 - ab) ** 0.5 * eps) / ab**0.5, atol=1e-12, rtol=0)


@pytest.mark.parametrize("grid, words", [
    ([], "at least 2 points"),
    ([0], "at least 2 points"),
    ([501, 0], "start at most at T=500, got 501"),
    ([10, 5, 1], "must end at 0, got 1"),
    ([10, 0, -1], "must end at 0, got -1"),
    ([10, 10, 0], "strictly decreasing, got 10 then 10 at index 1"),
    ([10, 20, 0], "strictly decreasing, got 10 then 20 at index 1"),
    ([10, 5.5, 0], "timesteps[1] must be an integer, got 5.5"),
    ([10.0, 0], "timesteps[0] must be an integer, got 10.0"),
    ([True, 0], "timesteps[0] must be an integer, got True"),
    ([10, "5", 0], "timesteps[1] must be an integer, got '5'"),
    ("500,0", "must be a list of integers"),
    (500, "must be a list of integers"),
    (np.zeros((2, 2), dtype=int), "must be a list of integers"),
    (torch.tensor(5), "must be a list of integers"),
])
def test_bad_grids_are_refused_in_one_line(grid, words):
    """The samplers (numerics) raise ValueError; the edge's check_timesteps says the same as a one-line user error."""
    for sampler in ("ddim", "dpmpp-2m"):
        with pytest.raises(ValueError) as info:
            run(sampler, timesteps=grid)
        assert words in str(info.value) and "\n" not in str(info.value)
        assert not isinstance(info.value, SpriteDiffError)
    with pytest.raises(SpriteDiffError) as info:
        check_timesteps(grid, 500)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_checked_grid_is_plain_python_ints():
    ts = check_timesteps(np.array([5, 2, 0]), 500)
    assert ts == [5, 2, 0] and all(type(t) is int for t in ts)


def test_sample_api_takes_a_grid_and_records_it(tiny_model_path):
    import numpy as np

    import spritediff

    model = spritediff.load(tiny_model_path)
    grid = [499, 300, 150, 50, 0]
    custom = spritediff.sample(model, "ddim", n=2, timesteps=grid, frames=True, precision="fp32")
    assert custom.nfe == 4 and custom.timesteps == grid[:-1] and custom.settings["timesteps"] == grid
    again = spritediff.sample(model, "ddim", n=2, timesteps=np.array(grid), frames=False, precision="fp32")
    assert np.array_equal(custom.images, again.images)
    built_in = spritediff.sample(model, "ddim", 4, n=2, frames=False, precision="fp32")
    assert not np.array_equal(custom.images, built_in.images)  # another grid, other sprites
    with pytest.raises(SpriteDiffError, match="give steps or timesteps, not both"):
        spritediff.sample(model, "ddim", 4, n=1, timesteps=grid)
    with pytest.raises(SpriteDiffError, match="must start at most at T=500"):
        spritediff.sample(model, "ddim", n=1, timesteps=[900, 0])
