"""Progressive distillation (spritediff.distill, spritediff.student): the target checked exactly on the
Gaussian-mixture oracle, the student's sampler with the exact teacher standing in for the student, and a tiny
end-to-end run through the CLI (metadata, sampling on its own grid, refusals, bit-exact resume)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import spritediff
from conftest import one_line_error, run, small_data, tiny_model
from oracle import GaussianMixture
from spritediff.checkpoint import SpriteModel, load_model, save_model
from spritediff.denoiser import eps_from_output
from spritediff.distill import (DistillConfig, distillation_target, landing_x0, path_states, read_state, round_grids,
                                round_path, truncated_snr_weight, x0_from_output)
from spritediff.samplers import SAMPLERS
from spritediff.engine import initial_noise, sample_generators
from spritediff.schedule import Schedule
from spritediff.student import StudentSchedule

SCHEDULE = Schedule.course()
TEACHER_GRID = SCHEDULE.timesteps(8, "trailing")  # [500, 438, 375, 312, 250, 188, 125, 62, 0]
STUDENT_GRID = TEACHER_GRID[::2]  # [500, 375, 250, 125, 0]


def noised(mixture: GaussianMixture, t: int, n: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 1, 2, 2) float64 x_t of the mixture's data at time t."""
    g = torch.Generator().manual_seed(seed)
    x0, _ = mixture.sample(n, g)
    ab = SCHEDULE.alpha_bar(t)
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(x0.shape, generator=g, dtype=torch.float64)


def states_at(eps_fn, x_t: torch.Tensor, grid: list[int]) -> dict[int, torch.Tensor]:
    """x at every time of grid (ending at 0) along spritediff's own DDIM sampler from x_t at grid[0]."""
    seen = {}
    final = SAMPLERS["ddim"](eps_fn, x_t, SCHEDULE, timesteps=grid,
                             callback=lambda info: seen.setdefault(info.t, info.x_t))
    return {**seen, 0: final}


def full(t: int, n: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


@pytest.mark.parametrize("start_steps, jump, step", [(8, 2, step) for step in range(4)] +
                         [(20, 5, step) for step in range(4)])
def test_one_student_step_towards_the_target_lands_where_the_teachers_steps_land(start_steps, jump, step):
    """With the exact oracle eps as teacher, the x0 target turned back into a DDIM step t -> t'' (by the
    samplers' own DDIM) reaches the teacher's x_t'' after its `jump` steps to float64 precision: two steps of
    DDIM-8 (the halving), and five of DDIM-20 (--jump 5, one round to 4 calls)."""
    mixture = GaussianMixture.small()
    eps = mixture.eps_fn(SCHEDULE)
    teacher_grid, student_grid = round_grids(SCHEDULE, start_steps, 4, jump)
    assert student_grid == STUDENT_GRID and teacher_grid[::jump] == student_grid
    path = teacher_grid[jump * step:jump * step + jump + 1]
    t, t_next = path[0], path[-1]
    x_t = noised(mixture, t, seed=step)
    n = len(x_t)
    target, x_next = distillation_target(eps, x_t, [full(time, n) for time in path], SCHEDULE.alphas_cumprod)
    teacher = states_at(eps, x_t, teacher_grid[jump * step:])
    assert torch.allclose(x_next, teacher[t_next], rtol=0, atol=1e-12)

    def student_eps(x, times):  # the step from t predicts x0 = target; the rest of the way is the oracle's
        if int(times[0]) != t:
            return eps(x, times)
        ab = SCHEDULE.alpha_bar(t)
        return (x - math.sqrt(ab) * target) / math.sqrt(1 - ab)

    student = states_at(student_eps, x_t, [t, *teacher_grid[jump * step + jump:]])
    assert torch.allclose(student[t_next], teacher[t_next], rtol=0, atol=1e-12)
    assert torch.allclose(student[0], teacher[0], rtol=0, atol=1e-11)
    if t_next == 0:  # the last step's target is the teacher's own result
        assert torch.allclose(target, teacher[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("start_steps, jump", [(8, 2), (20, 5)])
def test_teacher_path_states_are_ddims_and_their_pairs_give_the_target(start_steps, jump):
    """--states teacher: path_states with the exact oracle eps keeps spritediff's own DDIM sampler's x at every
    student time, and the x0 that lands from one kept state on the next is distillation_target's from that state,
    to float64 precision."""
    mixture = GaussianMixture.small()
    eps = mixture.eps_fn(SCHEDULE)
    teacher_grid, student_grid = round_grids(SCHEDULE, start_steps, 4, jump)
    x_T = torch.randn(32, 1, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    states = path_states(eps, x_T, teacher_grid, jump, SCHEDULE.alphas_cumprod)
    assert states.shape == (32, 5, 1, 2, 2)
    sampler = states_at(eps, x_T, teacher_grid)
    for i, t in enumerate(student_grid):
        assert torch.allclose(states[:, i], sampler[t], rtol=0, atol=1e-12), t
    for i, (t, t_next) in enumerate(zip(student_grid, student_grid[1:])):
        path = [full(time, 32) for time in teacher_grid[jump * i:jump * i + jump + 1]]
        target, _ = distillation_target(eps, states[:, i], path, SCHEDULE.alphas_cumprod)
        ab_t, ab_next = (torch.tensor(SCHEDULE.alpha_bar(time), dtype=torch.float64) for time in (t, t_next))
        assert torch.allclose(landing_x0(states[:, i], states[:, i + 1], ab_t, ab_next), target, rtol=0,
                              atol=1e-10), t


def test_target_is_batched_per_sample():
    """One call with a different student step per row gives each row's own target."""
    mixture = GaussianMixture.small()
    eps = mixture.eps_fn(SCHEDULE)
    steps = torch.tensor([0, 1, 2, 3, 3, 1])
    grid = torch.tensor(TEACHER_GRID)
    t, t_mid, t_next = (grid[2 * steps + k] for k in range(3))
    x_t = torch.cat([noised(mixture, int(time), n=1, seed=i) for i, time in enumerate(t)])
    together, _ = distillation_target(eps, x_t, [t, t_mid, t_next], SCHEDULE.alphas_cumprod)
    for row in range(len(steps)):
        alone, _ = distillation_target(eps, x_t[row:row + 1], [t[row:row + 1], t_mid[row:row + 1],
                                       t_next[row:row + 1]], SCHEDULE.alphas_cumprod)
        assert torch.allclose(together[row:row + 1], alone, rtol=0, atol=1e-14)


def test_v_output_and_truncated_snr_weight():
    ab = torch.tensor([0.99, 0.5, 0.01], dtype=torch.float64).view(-1, 1, 1, 1)
    x0, noise = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    assert torch.allclose(x0_from_output(v, x_t, ab, "v"), x0, atol=1e-14)
    assert torch.equal(x0_from_output(x0, x_t, ab, "x0"), x0)
    assert torch.allclose(truncated_snr_weight(ab.flatten()), torch.tensor([99.0, 1.0, 1.0], dtype=torch.float64))


def test_round_grids_halve_down_to_the_calls():
    grids = round_grids(SCHEDULE, 64, 4)
    assert [len(g) - 1 for g in grids] == [64, 32, 16, 8, 4] and DistillConfig(calls=4, start_steps=64).rounds == 4
    assert grids[-1] == [500, 375, 250, 125, 0] and all(g[::2] == h for g, h in zip(grids, grids[1:]))


def test_jump_sets_the_rounds_and_refuses_a_start_it_does_not_divide():
    assert DistillConfig(calls=4, start_steps=20, jump=5).rounds == 1
    assert DistillConfig(calls=2, start_steps=18, jump=3).rounds == 2
    assert [len(g) - 1 for g in round_grids(SCHEDULE, 18, 2, jump=3)] == [18, 6, 2]
    DistillConfig(calls=4, start_steps=20, jump=5).check(SCHEDULE.T)
    for bad, words in (({"start_steps": 16, "jump": 5}, "20, 100"), ({"start_steps": 20, "jump": 1}, "--jump")):
        with pytest.raises(spritediff.SpriteDiffError, match=words):
            DistillConfig(calls=4, **bad).check(SCHEDULE.T)


class OracleStudent(nn.Module):
    """A stand-in for a perfect v student of the oracle: at each point of the student grid it outputs the v of the
    exact distillation target (two exact teacher DDIM steps). Computes in float64; sample() casts to float32."""

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture, self.in_channels, self.height, self.n_cfeat = mixture, 1, 2, 0

    def v(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        index = torch.tensor([STUDENT_GRID.index(int(time)) for time in t])
        grid = torch.tensor(TEACHER_GRID)
        target, _ = distillation_target(self.mixture.eps_fn(SCHEDULE), x, [grid[2 * index + k] for k in range(3)],
                                        SCHEDULE.alphas_cumprod)
        ab = SCHEDULE.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (ab.sqrt() * x - target) / (1 - ab).sqrt()  # x0 = sqrt(ab) x - sqrt(1 - ab) v

    def forward(self, x, time, c=None):
        t = torch.round(time.double() * SCHEDULE.T).long().reshape(-1)
        return self.v(x.double(), t).to(x.dtype)


def test_student_sampler_with_the_exact_teacher_as_student_gives_the_teachers_ddim():
    """The student's own sampler (its StudentSchedule's sampler on its grid, v output converted as the Denoiser
    does) with the exact two-step teacher as the student reproduces the teacher's DDIM on the doubled grid."""
    mixture = GaussianMixture.small()
    student = OracleStudent(mixture)
    x_T = torch.randn(32, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    schedule = StudentSchedule(tuple(STUDENT_GRID), 0.0)
    sampler, steps, grid, guidance, options = schedule.resolve("ddim", None, None, None, {})
    assert (sampler, steps, grid, guidance, options) == ("ddim", None, STUDENT_GRID, 0.0, {})

    def eps_fn(x, t):
        return eps_from_output(student.v(x, t), x, SCHEDULE.alphas_cumprod[t].view(-1, 1, 1, 1), "v")

    ours = SAMPLERS[sampler](eps_fn, x_T, SCHEDULE, timesteps=grid, **options)
    teacher = SAMPLERS["ddim"](mixture.eps_fn(SCHEDULE), x_T, SCHEDULE, timesteps=TEACHER_GRID)
    assert torch.allclose(ours, teacher, rtol=0, atol=1e-10)
    assert (ours - mixture.ode_solution(x_T, SCHEDULE.alpha_bar(500))).abs().max() > 1e-3  # 8 DDIM steps, not the ODE


def test_the_sample_critics_sampler_with_the_exact_teacher_as_student_gives_the_teachers_ddim():
    """The sample critic's samples are path_states on the student's eps (its output through eps_from_output), kept
    at the grid's end only: with the exact two-step teacher as the student that reproduces the teacher's DDIM-8
    to float64 precision."""
    mixture = GaussianMixture.small()
    student = OracleStudent(mixture)
    x_T = torch.randn(32, 1, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def eps_fn(x, t):
        return eps_from_output(student.v(x, t), x, SCHEDULE.alphas_cumprod[t].view(-1, 1, 1, 1), "v")

    ours = path_states(eps_fn, x_T, STUDENT_GRID, len(STUDENT_GRID) - 1, SCHEDULE.alphas_cumprod)[:, -1]
    teacher = SAMPLERS["ddim"](mixture.eps_fn(SCHEDULE), x_T, SCHEDULE, timesteps=TEACHER_GRID)
    assert torch.allclose(ours, teacher, rtol=0, atol=1e-10)


def test_sample_runs_a_student_model_on_its_own_grid_in_float32():
    """spritediff.sample on a SpriteModel holding the oracle student: its grid by default, one call a step, the
    teacher's DDIM result to float32 precision."""
    mixture = GaussianMixture.small()
    model = SpriteModel(OracleStudent(mixture), SCHEDULE, (), prediction_type="v",
                        student=StudentSchedule(tuple(STUDENT_GRID), 0.0))
    finals = []
    result = spritediff.sample(model, n=16, seed=3, fast=False, precision="fp32", frames=False,
                               callback=lambda info, first: finals.append(info.x0_hat))
    assert result.nfe == 4 and result.settings["timesteps"] == STUDENT_GRID
    x_T = initial_noise(sample_generators(3, 16), (1, 2, 2)).double()
    teacher = SAMPLERS["ddim"](mixture.eps_fn(SCHEDULE), x_T, SCHEDULE, timesteps=TEACHER_GRID)
    assert torch.allclose(finals[-1].double(), teacher, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, words", [
    ({"steps": 20}, ("steps 20", "4-call distilled student", "500, 375, 250, 125, 0")),
    ({"sampler": "ddpm"}, ("sampler 'ddpm'", "own sampler")),
    ({"timesteps": [500, 250, 0]}, ("timesteps",)),
    ({"eta": 1.0}, ("option eta",)),
    ({"guidance": 2.0}, ("guidance 2.0", "guidance 0.5 in its weights")),
])
def test_sample_refuses_what_a_student_was_not_trained_for(kwargs, words):
    model = SpriteModel(OracleStudent(GaussianMixture.small()), SCHEDULE, (), prediction_type="v",
                        student=StudentSchedule(tuple(STUDENT_GRID), 0.5))
    with pytest.raises(spritediff.SpriteDiffError) as info:
        spritediff.sample(model, n=2, **kwargs)
    assert all(word in str(info.value) for word in words), str(info.value)


# --- end to end through the CLI: a random n_feat 8 teacher, 24 random sprites, 2 rounds of 3 steps ---

def distill_args(folder, out_name="student.safetensors", *extra):
    return ["distill", "--teacher", folder / "teacher.safetensors", "--data", folder / "x.npy", "--labels",
            folder / "y.npy", "--out", folder / out_name, "--calls", 2, "--start-steps", 8, "--steps-per-round", 3,
            "--batch", 6, "--ckpt-every", 2, *extra]


def run_interrupted(monkeypatch, stop: int, args) -> int:
    """The CLI's exit code for a distillation that is interrupted (Ctrl-C) as it is about to take step `stop`."""
    from spritediff.distill import Distiller

    original = Distiller.train_step

    def interrupted(self):
        if self.step == stop:
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(Distiller, "train_step", interrupted)
        return run(args)


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill")
    small_data(folder)
    teacher = tiny_model()
    teacher.class_mix = (0.2, 0.2, 0.2, 0.2, 0.2)
    save_model(teacher, folder / "teacher.safetensors")
    return folder


@pytest.fixture(scope="module")
def finished(teacher_folder):
    assert run(distill_args(teacher_folder)) == 0
    return teacher_folder / "student.safetensors"


def test_a_jump_of_four_distils_ddim_8_into_two_calls_in_one_round(teacher_folder):
    out = teacher_folder / "direct.safetensors"
    assert run(distill_args(teacher_folder, "direct.safetensors", "--jump", 4)) == 0
    student = load_model(out)
    assert student.student.timesteps == (500, 250, 0) and student.info["config"]["jump"] == 4
    log = [json.loads(line) for line in out.with_name("direct.log.jsonl").read_text().splitlines()]
    assert [entry["round"] for entry in log] == [1, 1, 1] and {entry["calls"] for entry in log} == {2}
    assert not out.with_name("direct-calls2.safetensors").exists()  # one round: no intermediate student


def test_a_run_on_the_teachers_paths_learns_there_and_resumes_to_the_same_weights(teacher_folder, monkeypatch,
                                                                                  capsys):
    """--states teacher: one round from paths drawn at the start; a run stopped at step 2 and resumed draws the
    same paths and ends on the uninterrupted run's weights."""
    extra = ("--jump", 4, "--states", "teacher", "--paths", 10)
    assert run(distill_args(teacher_folder, "paths.safetensors", *extra)) == 0
    student = load_model(teacher_folder / "paths.safetensors")
    assert student.student.timesteps == (500, 250, 0)
    assert (student.info["config"]["states"], student.info["config"]["paths"]) == ("teacher", 10)
    assert run_interrupted(monkeypatch, 2, distill_args(teacher_folder, "paths_cut.safetensors", *extra)) == 130
    assert run(distill_args(teacher_folder, "paths_cut.safetensors", *extra, "--resume")) == 0
    whole, cut = (read_state(teacher_folder / name) for name in ("paths.train.pt", "paths_cut.train.pt"))
    assert all(torch.equal(whole["ema"][k], cut["ema"][k]) for k in whole["ema"])
    capsys.readouterr()
    assert run(distill_args(teacher_folder, "paths_cut.safetensors", "--jump", 4, "--resume")) == 2
    one_line_error(capsys, "other settings", "paths", "states")


def test_a_wider_student_starts_as_its_teacher_and_resumes_to_the_same_weights(teacher_folder, monkeypatch):
    """--student-width 16 on a teacher of 8: round 0's student is the teacher widened (the same eps before any
    step), both rounds train at width 16 (round 2's teacher is round 1's wide student), and a run stopped inside
    round 2 resumes to the uninterrupted run's weights."""
    from spritediff.data import load_data
    from spritediff.distill import Distiller

    teacher = load_model(teacher_folder / "teacher.safetensors")
    data = load_data(teacher_folder / "x.npy", teacher_folder / "y.npy", 3)
    config = DistillConfig(calls=2, start_steps=8, steps_per_round=3, batch=6, student_width=16)
    distiller = Distiller(config, teacher, data, torch.device("cpu"))
    x, t, c = torch.randn(4, 3, 16, 16), torch.rand(4), torch.eye(5)[:4]
    with torch.no_grad():
        assert torch.allclose(distiller.student.eval()(x, t, c), teacher.net.eval()(x, t, c), atol=1e-4)
    extra = ("--student-width", 16)
    assert run(distill_args(teacher_folder, "wide.safetensors", *extra)) == 0
    wide = load_model(teacher_folder / "wide.safetensors")
    assert wide.net.n_feat == 16 and wide.info["config"]["student_width"] == 16 and wide.student.calls == 2
    assert load_model(round_path(teacher_folder / "wide.safetensors", 4)).net.n_feat == 16
    assert run_interrupted(monkeypatch, 5, distill_args(teacher_folder, "wide_cut.safetensors", *extra)) == 130
    assert run(distill_args(teacher_folder, "wide_cut.safetensors", *extra, "--resume")) == 0
    whole, cut = (read_state(teacher_folder / name) for name in ("wide.train.pt", "wide_cut.train.pt"))
    for key in ("student", "ema", "teacher"):
        assert all(torch.equal(whole[key][k], cut[key][k]) for k in whole[key]), key


def test_an_adversarial_run_logs_its_critic_and_resumes_to_the_same_weights(finished, teacher_folder, monkeypatch):
    """--adversarial 0.5: the logged loss is the distillation loss alone (step 1's equals the plain run's, the
    students being the same until then), the student ends elsewhere than the plain run's, the critic and its
    optimizer are in the checkpoint, and a run stopped inside round 2 resumes to the uninterrupted weights."""
    extra = ("--adversarial", 0.5)
    assert run(distill_args(teacher_folder, "adv.safetensors", *extra)) == 0
    log, plain_log = ([json.loads(line) for line in (teacher_folder / name).read_text().splitlines()]
                      for name in ("adv.log.jsonl", "student.log.jsonl"))
    assert log[0]["loss"] == plain_log[0]["loss"] and all(entry["critic_loss"] >= 0 for entry in log)
    assert "critic_loss" not in plain_log[0]
    assert load_model(teacher_folder / "adv.safetensors").info["config"]["adversarial"] == 0.5
    whole, plain = read_state(teacher_folder / "adv.train.pt"), read_state(teacher_folder / "student.train.pt")
    assert "critic" not in plain and not all(torch.equal(whole["ema"][k], plain["ema"][k]) for k in plain["ema"])
    assert run_interrupted(monkeypatch, 5, distill_args(teacher_folder, "adv_cut.safetensors", *extra)) == 130
    assert run(distill_args(teacher_folder, "adv_cut.safetensors", *extra, "--resume")) == 0
    cut = read_state(teacher_folder / "adv_cut.train.pt")
    for key in ("student", "ema", "critic"):
        assert all(torch.equal(whole[key][k], cut[key][k]) for k in whole[key]), key
    assert whole["critic_optimizer"]["state"].keys() == cut["critic_optimizer"]["state"].keys()


@pytest.mark.parametrize("setting, critic", [("adversarial", "critic"), ("adversarial_sample", "sample_critic"),
                                             ("dmd", "fake_score")])
def test_a_critics_term_joins_after_its_start_share_of_each_round(teacher_folder, setting, critic):
    """adversarial_start 0.5 of 4 steps a round: steps 1 and 2 leave the student where the plain run's steps do
    (the critic, of x0s or of whole samples, or the fake score learns beside it), step 3 moves it elsewhere."""
    from spritediff.data import load_data
    from spritediff.distill import Distiller

    teacher = load_model(teacher_folder / "teacher.safetensors")
    data = load_data(teacher_folder / "x.npy", teacher_folder / "y.npy", 3)
    runs = [Distiller(DistillConfig(calls=2, start_steps=8, jump=4, steps_per_round=4, batch=6, adversarial_start=0.5,
                                    **{setting: ratio}), teacher, data, torch.device("cpu"))
            for ratio in (0.0, 1.0)]
    for step in range(3):
        for distiller in runs:
            distiller.train_step()
        plain, judged = (distiller.student.state_dict() for distiller in runs)
        assert all(torch.equal(plain[k], judged[k]) for k in plain) == (step < 2), step
    assert getattr(runs[1], f"{critic}_loss") is not None and getattr(runs[0], critic) is None


def test_init_starts_round_one_from_a_student_and_a_resume_needs_the_same_one(finished, teacher_folder, capsys):
    """--init with round 1's finished student of the plain run (4 calls on the same grid): the new run's student
    and EMA start as that student's weights, not the teacher's, the run records its fingerprint, and resuming
    without --init is refused."""
    from spritediff.data import load_data
    from spritediff.distill import Distiller, teacher_fingerprint

    teacher = load_model(teacher_folder / "teacher.safetensors")
    data = load_data(teacher_folder / "x.npy", teacher_folder / "y.npy", 3)
    start = load_model(round_path(finished, 4))
    config = DistillConfig(calls=2, start_steps=8, steps_per_round=3, batch=6,
                           teacher_sha256=teacher_fingerprint(teacher))
    distiller = Distiller(config, teacher, data, torch.device("cpu"), init=start)
    for weights in (distiller.student.state_dict(), distiller.ema.module.state_dict()):
        assert all(torch.equal(weights[k], v) for k, v in start.net.state_dict().items())
    assert not torch.equal(distiller.student.state_dict()["out.3.weight"], teacher.net.state_dict()["out.3.weight"])
    extra = ("--init", round_path(finished, 4), "--adversarial", 0.5, "--adversarial-start", 0)
    assert run(distill_args(teacher_folder, "init.safetensors", *extra)) == 0
    config = load_model(teacher_folder / "init.safetensors").info["config"]
    assert config["init_sha256"] == teacher_fingerprint(start) != config["teacher_sha256"]
    assert run(distill_args(teacher_folder, "init.safetensors", "--adversarial", 0.5, "--adversarial-start", 0,
                            "--resume")) == 2
    one_line_error(capsys, "other settings", "init_sha256")


def test_a_narrower_init_starts_a_wider_run_widened_and_a_wider_one_is_refused(finished, teacher_folder):
    """--init with round 1's 8-wide student on a --student-width 16 run: round 0's student and EMA compute what the
    init student does (Net2Net), at width 16. A 16-wide student cannot start a run of width 8: one line."""
    import dataclasses

    from spritediff.data import load_data
    from spritediff.distill import Distiller, teacher_fingerprint
    from spritediff.models.widen import widen

    teacher = load_model(teacher_folder / "teacher.safetensors")
    data = load_data(teacher_folder / "x.npy", teacher_folder / "y.npy", 3)
    start = load_model(round_path(finished, 4))
    config = DistillConfig(calls=2, start_steps=8, steps_per_round=3, batch=6, student_width=16,
                           teacher_sha256=teacher_fingerprint(teacher))
    distiller = Distiller(config, teacher, data, torch.device("cpu"), init=start)
    x, t, c = torch.randn(4, 3, 16, 16), torch.rand(4), torch.eye(5)[:4]
    with torch.no_grad():
        wanted = start.net.eval()(x, t, c)
        for net in (distiller.student, distiller.ema.module):
            assert net.n_feat == 16
            assert torch.allclose(net.eval()(x, t, c), wanted, atol=1e-4)
    wide_start = dataclasses.replace(start, net=widen(start.net, 2))
    narrow = dataclasses.replace(config, student_width=0)
    with pytest.raises(spritediff.SpriteDiffError, match="its width is 16, round 1's student needs one that divides 8"):
        Distiller(narrow, teacher, data, torch.device("cpu"), init=wide_start)


def test_init_refuses_what_round_one_cannot_start_from_in_one_line(finished, teacher_folder, tmp_path, capsys):
    """Not a student (the teacher itself), a student of another grid (the final 2-call one for a run whose round 1
    makes 4 calls), and one of another guidance: one line each, nothing written."""
    for init, extra, words in ((teacher_folder / "teacher.safetensors", (), ("is not a distilled student",)),
                               (finished, (), ("its grid is [500, 250, 0]", "needs [500, 375, 250, 125, 0]")),
                               (finished, ("--jump", 4, "--guidance", 2), ("its guidance is 0.5", "needs 2"))):
        args = distill_args(teacher_folder, "unused.safetensors", "--init", init, *extra)
        args[args.index("--out") + 1] = tmp_path / "bad.safetensors"
        assert run(args) == 2
        one_line_error(capsys, *words)
        assert list(tmp_path.iterdir()) == []


def test_student_states_are_its_own_samplers_states_and_the_target_is_the_teachers_steps_from_there(
        finished, teacher_folder):
    """--states student: every x_t of a step is the state the (init) student's own DDIM sampler reaches from that
    row's noise and context after `index` calls, and its target is the teacher's guided DDIM steps from there."""
    from spritediff.data import load_data
    from spritediff.denoiser import Denoiser
    from spritediff.distill import Distiller, teacher_fingerprint

    teacher = load_model(teacher_folder / "teacher.safetensors")
    data = load_data(teacher_folder / "x.npy", teacher_folder / "y.npy", 3)
    start = load_model(round_path(finished, 4))
    config = DistillConfig(calls=4, start_steps=8, steps_per_round=3, batch=16, states="student",
                           teacher_sha256=teacher_fingerprint(teacher), init_sha256=teacher_fingerprint(start))
    distiller = Distiller(config, teacher, data, torch.device("cpu"), init=start)
    rows, index, noise, keep = distiller.step_draws(0)
    assert len(set(index.tolist())) > 1  # the batch mixes student steps
    x_t, t, ab, context, target = distiller._student_batch(rows, index, noise, keep)
    sample_states = states_at(Denoiser(start.net.eval(), SCHEDULE, context, prediction_type="v"), noise,
                              STUDENT_GRID)
    expected = torch.stack([sample_states[STUDENT_GRID[i]][j] for j, i in enumerate(index.tolist())])
    assert torch.allclose(x_t, expected, atol=1e-5)
    assert t.tolist() == [STUDENT_GRID[i] for i in index.tolist()]
    for j, i in enumerate(index.tolist()):
        path = [full(time, 1) for time in TEACHER_GRID[2 * i:2 * i + 3]]
        one = Denoiser(teacher.net.eval(), SCHEDULE, context[j:j + 1], guidance=config.guidance)
        wanted, _ = distillation_target(one, x_t[j:j + 1], path, SCHEDULE.alphas_cumprod.float())
        assert torch.allclose(target[j:j + 1], wanted, atol=1e-4), j


def test_a_run_on_the_students_own_states_resumes_to_the_same_weights_and_needs_init(finished, teacher_folder,
                                                                                    monkeypatch, capsys, tmp_path):
    """--states student from --init: a run stopped at step 2 and resumed ends on the uninterrupted run's weights;
    without --init it is one line and writes nothing."""
    extra = ("--calls", 4, "--states", "student", "--init", round_path(finished, 4))
    assert run(distill_args(teacher_folder, "own.safetensors", *extra)) == 0
    assert load_model(teacher_folder / "own.safetensors").info["config"]["states"] == "student"
    assert run_interrupted(monkeypatch, 2, distill_args(teacher_folder, "own_cut.safetensors", *extra)) == 130
    assert run(distill_args(teacher_folder, "own_cut.safetensors", *extra, "--resume")) == 0
    whole, cut = (read_state(teacher_folder / name) for name in ("own.train.pt", "own_cut.train.pt"))
    assert all(torch.equal(whole["ema"][k], cut["ema"][k]) for k in whole["ema"])
    capsys.readouterr()
    args = distill_args(teacher_folder, "unused.safetensors", "--calls", 4, "--states", "student")
    args[args.index("--out") + 1] = tmp_path / "bad.safetensors"
    assert run(args) == 2
    one_line_error(capsys, "--states student", "give --init")
    assert list(tmp_path.iterdir()) == []


def test_the_sample_critic_judges_the_students_own_samples_through_all_its_calls(finished, teacher_folder):
    """--adversarial-sample: the fake samples are what the student's own sampler draws from the same noise and
    classes (its net in eval mode, and back in training mode after), and they carry the gradient to its first
    layer; the real ones are the step's sprites."""
    from spritediff.data import load_data
    from spritediff.denoiser import Denoiser
    from spritediff.distill import Distiller, teacher_fingerprint

    teacher = load_model(teacher_folder / "teacher.safetensors")
    data = load_data(teacher_folder / "x.npy", teacher_folder / "y.npy", 3)
    start = load_model(round_path(finished, 4))
    config = DistillConfig(calls=4, start_steps=8, steps_per_round=3, batch=8, adversarial_sample=0.5,
                           teacher_sha256=teacher_fingerprint(teacher), init_sha256=teacher_fingerprint(start))
    distiller = Distiller(config, teacher, data, torch.device("cpu"), init=start)
    noise = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    context = distiller.labels[:8]
    sample = distiller._student_sample(noise, context)
    own = states_at(Denoiser(start.net.eval(), SCHEDULE, context, prediction_type="v"), noise, STUDENT_GRID)[0]
    assert torch.allclose(sample, own, atol=1e-5) and distiller.student.training
    sample.square().mean().backward()
    assert distiller.student.init_conv.conv1[0].weight.grad.abs().sum() > 0


def test_a_sample_critic_run_logs_its_critic_and_resumes_to_the_same_weights(finished, teacher_folder, monkeypatch):
    """--adversarial-sample through the CLI: the log shows the sample critic's loss and a run stopped at step 2
    resumes to the uninterrupted run's weights and critic; on the teacher's paths it runs too."""
    extra = ("--adversarial-sample", 0.5, "--adversarial-start", 0.3)
    assert run(distill_args(teacher_folder, "real.safetensors", *extra)) == 0
    log = [json.loads(line) for line in (teacher_folder / "real.log.jsonl").read_text().splitlines()]
    assert all(entry["sample_critic_loss"] >= 0 for entry in log) and "critic_loss" not in log[0]
    assert run_interrupted(monkeypatch, 2, distill_args(teacher_folder, "real_cut.safetensors", *extra)) == 130
    assert run(distill_args(teacher_folder, "real_cut.safetensors", *extra, "--resume")) == 0
    whole, cut = (read_state(teacher_folder / name) for name in ("real.train.pt", "real_cut.train.pt"))
    for key in ("ema", "sample_critic"):
        assert all(torch.equal(whole[key][k], cut[key][k]) for k in whole[key]), key
    paths = ("--states", "teacher", "--jump", 4, "--paths", 8)  # steps of paths: the critic's rows are a data step's
    assert run(distill_args(teacher_folder, "real_paths.safetensors", *paths, *extra)) == 0
    log = [json.loads(line) for line in (teacher_folder / "real_paths.log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(entry["sample_critic_loss"] >= 0 for entry in log)


def test_a_dmd_run_logs_its_fake_scores_loss_and_resumes_to_the_same_weights(teacher_folder, monkeypatch):
    """--dmd through the CLI (one round): the log shows the fake score's loss, the student ends elsewhere than the
    plain one-round run's, and a run stopped at step 2 resumes to the uninterrupted run's student and fake score."""
    extra = ("--jump", 4, "--dmd", 0.5, "--adversarial-start", 0.3)
    assert run(distill_args(teacher_folder, "dmd.safetensors", *extra)) == 0
    log = [json.loads(line) for line in (teacher_folder / "dmd.log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(entry["fake_score_loss"] > 0 for entry in log)
    assert run(distill_args(teacher_folder, "dmd_plain.safetensors", "--jump", 4)) == 0
    assert run_interrupted(monkeypatch, 2, distill_args(teacher_folder, "dmd_cut.safetensors", *extra)) == 130
    assert run(distill_args(teacher_folder, "dmd_cut.safetensors", *extra, "--resume")) == 0
    whole, cut, plain = (read_state(teacher_folder / f"{name}.train.pt") for name in ("dmd", "dmd_cut", "dmd_plain"))
    for key in ("ema", "fake_score"):
        assert all(torch.equal(whole[key][k], cut[key][k]) for k in whole[key]), key
    assert not all(torch.equal(whole["ema"][k], plain["ema"][k]) for k in plain["ema"])
    teacher = load_model(teacher_folder / "teacher.safetensors").net.state_dict()
    fake = whole["fake_score"]
    assert not torch.equal(fake["out.3.weight"], teacher["out.3.weight"].float())  # it learnt
    assert all(torch.equal(fake[k], teacher[k].to(fake[k].dtype)) for k in teacher if "running_" in k)  # eval mode


def test_a_frozen_dmd_weight_is_held_from_the_join_and_survives_a_resume(teacher_folder, monkeypatch):
    """--dmd-weight frozen: the log's dmd_weight is the same at every joined step (balanced: it changes), and a run
    stopped after the join resumes with the held weight to the uninterrupted run's student and fake score."""
    def weights(name, *extra):
        assert run(distill_args(teacher_folder, name, *shared, *extra)) == 0
        log = [json.loads(line) for line in (teacher_folder / name.replace(".safetensors", ".log.jsonl"))
               .read_text().splitlines()]
        return [entry.get("dmd_weight") for entry in log]

    shared = ("--jump", 4, "--dmd", 0.5, "--adversarial-start", 0.25, "--steps-per-round", 4)
    frozen, balanced = weights("frozen.safetensors", "--dmd-weight", "frozen"), weights("balanced.safetensors")
    assert frozen[0] is None and balanced[0] is None  # warming up: no term yet
    assert frozen[1] == balanced[1] > 0 and len(set(frozen[1:])) == 1 and len(set(balanced[1:])) == 3
    cut_args = distill_args(teacher_folder, "frozen_cut.safetensors", *shared, "--dmd-weight", "frozen")
    assert run_interrupted(monkeypatch, 3, cut_args) == 130
    assert run(cut_args + ["--resume"]) == 0
    whole, cut = (read_state(teacher_folder / f"{name}.train.pt") for name in ("frozen", "frozen_cut"))
    assert whole["dmd_weight"] == cut["dmd_weight"] and round(whole["dmd_weight"], 6) == frozen[1]  # log: 6 digits
    for key in ("ema", "fake_score"):
        assert all(torch.equal(whole[key][k], cut[key][k]) for k in whole[key]), key


def test_a_dmd_gan_run_logs_its_critic_and_resumes_to_the_same_weights(teacher_folder, monkeypatch):
    """--dmd-gan: the fake score's critic learns from the first step (its loss in the log, near log 4 untrained),
    its term moves the student elsewhere than --dmd alone once it joins, and a run stopped after the join resumes
    to the uninterrupted run's student, fake score and critic."""
    shared = ("--jump", 4, "--dmd", 0.5, "--adversarial-start", 0.25, "--steps-per-round", 4)
    extra = (*shared, "--dmd-gan", 0.5)
    assert run(distill_args(teacher_folder, "gan.safetensors", *extra)) == 0
    log = [json.loads(line) for line in (teacher_folder / "gan.log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(abs(entry["gan_critic_loss"] - 2 * math.log(2)) < 0.3 for entry in log)
    assert run(distill_args(teacher_folder, "gan_off.safetensors", *shared)) == 0
    off_log = (teacher_folder / "gan_off.log.jsonl").read_text()
    assert "gan_critic_loss" not in off_log
    assert run_interrupted(monkeypatch, 3, distill_args(teacher_folder, "gan_cut.safetensors", *extra)) == 130
    assert run(distill_args(teacher_folder, "gan_cut.safetensors", *extra, "--resume")) == 0
    whole, cut, off = (read_state(teacher_folder / f"{name}.train.pt") for name in ("gan", "gan_cut", "gan_off"))
    for key in ("ema", "fake_score", "fake_score_critic"):
        assert all(torch.equal(whole[key][k], cut[key][k]) for k in whole[key]), key
    assert "fake_score_critic" not in off
    assert not all(torch.equal(whole["ema"][k], off["ema"][k]) for k in off["ema"])
    assert load_model(teacher_folder / "gan.safetensors").info["config"]["dmd_gan"] == 0.5


@pytest.mark.parametrize("dmd_guidance, w", [(None, 0.5), (2.0, 2.0)])
def test_the_matchings_real_score_is_the_teacher_guided_at_dmd_guidance(teacher_folder, dmd_guidance, w):
    """--dmd-guidance: the real score is the given teacher guided at it (unset: at --guidance), exactly the
    engine's guided eps that `sample` runs, and not the teacher at the other weight."""
    from spritediff.data import load_data
    from spritediff.distill import Distiller, teacher_fingerprint
    from spritediff.engine import Engine

    teacher = load_model(teacher_folder / "teacher.safetensors")
    data = load_data(teacher_folder / "x.npy", teacher_folder / "y.npy", 3)
    config = DistillConfig(calls=2, start_steps=8, jump=4, steps_per_round=3, batch=8, guidance=0.5, dmd=0.5,
                           dmd_guidance=dmd_guidance, teacher_sha256=teacher_fingerprint(teacher))
    distiller = Distiller(config, teacher, data, torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    x_t, t = torch.randn(8, 3, 16, 16, generator=g), torch.randint(1, 501, (8,), generator=g)
    context = distiller.labels[:8]
    engine = Engine(teacher, torch.device("cpu"), fast=True, precision="fp32")
    real = distiller._real_score_eps(context)(x_t, t)
    assert torch.equal(real, engine.eps(context, w)(x_t, t))
    assert not torch.allclose(real, engine.eps(context, 2.5 - w)(x_t, t))


@pytest.mark.parametrize("flag", ["--guidance", "--dmd-guidance"])
def test_a_guidance_on_a_teacher_without_classes_is_one_line_and_writes_nothing(tmp_path, capsys, flag):
    from spritediff.models import ContextUnet

    torch.manual_seed(0)
    save_model(SpriteModel(ContextUnet(n_feat=8, n_cfeat=0).eval(), SCHEDULE, ()), tmp_path / "plain.safetensors")
    small_data(tmp_path, classes=0)
    out = tmp_path / "out"
    out.mkdir()
    args = ["distill", "--teacher", tmp_path / "plain.safetensors", "--data", tmp_path / "x.npy", "--out",
            out / "student.safetensors", "--calls", 2, "--start-steps", 8, "--jump", 4, "--dmd", 0.5, flag, 2]
    assert run(args) == 2
    one_line_error(capsys, f"{flag} 2", "no classes")
    assert list(out.iterdir()) == []


def test_dmd_guidance_needs_dmd_and_is_recorded(teacher_folder, tmp_path, capsys):
    args = distill_args(teacher_folder, "unused.safetensors", "--jump", 4, "--dmd-guidance", 2)
    args[args.index("--out") + 1] = tmp_path / "bad.safetensors"
    assert run(args) == 2
    one_line_error(capsys, "--dmd-guidance 2", "needs --dmd")
    assert not list(tmp_path.iterdir())
    extra = ("--jump", 4, "--dmd", 0.5, "--adversarial-start", 0.3, "--dmd-guidance", 2)
    assert run(distill_args(teacher_folder, "dmd_guided.safetensors", *extra)) == 0
    assert load_model(teacher_folder / "dmd_guided.safetensors").info["config"]["dmd_guidance"] == 2.0


def test_teacher_states_need_one_round(teacher_folder, tmp_path, capsys):
    args = distill_args(teacher_folder, "unused.safetensors", "--states", "teacher")
    args[args.index("--out") + 1] = tmp_path / "bad.safetensors"
    assert run(args) == 2
    one_line_error(capsys, "--states teacher distils in one round", "--jump")
    assert list(tmp_path.iterdir()) == []


def test_student_file_records_its_schedule_and_teacher(finished, teacher_folder):
    student = load_model(finished)
    assert student.prediction_type == "v" and student.student.calls == 2
    assert student.student.to_config() == {
        "sampler": "ddim", "timesteps": [500, 250, 0], "calls": 2, "guidance": 0.5, "start_steps": 8,
        "teacher": {"model": str(teacher_folder / "teacher.safetensors"),
                    "sha256": student.info["config"]["teacher_sha256"], "prediction_type": "eps"}}
    assert student.class_mix == (0.2, 0.2, 0.2, 0.2, 0.2) and student.info["rounds_done"] == 2
    halfway = load_model(round_path(finished, 4))  # round 1's student, kept
    assert halfway.student.timesteps == (500, 375, 250, 125, 0) and halfway.info["rounds_done"] == 1
    lines = [json.loads(line) for line in (teacher_folder / "student.log.jsonl").read_text().splitlines()]
    assert [(e["step"], e["round"], e["calls"]) for e in lines] == [(1, 1, 4), (2, 1, 4), (3, 1, 4), (4, 2, 2),
                                                                  (5, 2, 2), (6, 2, 2)]


def test_sample_cli_uses_the_students_grid_and_refuses_other_steps(finished, tmp_path, capsys):
    assert run(["sample", "--model", finished, "--n", 3, "--out", tmp_path / "s", "--precision", "fp32"]) == 0
    record = json.loads((tmp_path / "s" / "run.json").read_text())
    assert (record["sampler"], record["steps"], record["nfe"], record["timesteps"]) == ("ddim", 2, 2, [500, 250, 0])
    assert record["context"] == "mix" and record["guidance"] == 0.5 and record["student"]["calls"] == 2
    capsys.readouterr()
    assert run(["sample", "--model", finished, "--n", 3, "--out", tmp_path / "t", "--steps", 20]) == 2
    one_line_error(capsys, "steps 20", "2-call distilled student")
    assert not (tmp_path / "t").exists()
    api = spritediff.sample(load_model(finished), n=3, context="mix", precision="fp32", frames=False)
    assert np.array_equal(api.images, np.load(tmp_path / "s" / "samples.npy"))


@pytest.mark.parametrize("extra, words", [
    (["--eta", "0.5"], ("option eta", "2-call distilled student")),  # checked against the student's ddim, not ddpm
    (["--sampler", "ddpm"], ("sampler 'ddpm'", "own sampler")),
    (["--sampler", "ddim:4"], ("steps 4",)),
    (["--guidance", "2"], ("guidance 2.0", "guidance 0.5 in its weights")),
])
def test_sample_cli_refuses_a_students_other_settings_in_one_line(finished, tmp_path, capsys, extra, words):
    assert run(["sample", "--model", finished, "-n", 2, "--out", tmp_path / "o", *extra]) == 2
    message = one_line_error(capsys, *words)
    assert "takes no option" not in message and not (tmp_path / "o").exists()


def test_sample_cli_takes_a_students_own_settings_given_explicitly(finished, tmp_path):
    assert run(["sample", "--model", finished, "-n", 2, "--no-gif", "--out", tmp_path / "o", "--steps", 2,
                "--guidance", 0.5, "--eta", 0, "--sampler", "ddim", "--precision", "fp32"]) == 0
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert (record["steps"], record["guidance"], record["student"]["guidance"]) == (2, 0.5, 0.5)


@pytest.mark.parametrize("stop, kept", [(3, 3), (5, 4)])
def test_resume_after_an_interrupted_run_equals_the_uninterrupted_run(finished, teacher_folder, monkeypatch,
                                                                       capsys, stop, kept):
    """Stopped right after round 1's end (checkpoint 3, written once round 2 has started), or inside round 2
    (checkpoint 4; step 5 is lost and done again)."""
    name = f"cut{stop}.safetensors"
    assert run_interrupted(monkeypatch, stop, distill_args(teacher_folder, name)) == 130
    assert f"kept as of its last checkpoint, step {kept}" in capsys.readouterr().err
    assert run(distill_args(teacher_folder, name, "--resume")) == 0
    whole, cut = read_state(teacher_folder / "student.train.pt"), read_state(teacher_folder / f"cut{stop}.train.pt")
    assert whole["step"] == cut["step"] == 6
    for key in ("student", "ema", "teacher"):
        assert whole[key].keys() == cut[key].keys()
        assert all(torch.equal(whole[key][k], cut[key][k]) for k in whole[key]), key
    a, b = load_model(finished), load_model(teacher_folder / name)
    assert all(torch.equal(a.net.state_dict()[k], b.net.state_dict()[k]) for k in a.net.state_dict())


@pytest.mark.parametrize("extra, words", [
    (["--start-steps", 12], ("--start-steps", "8, 16, 32")),
    (["--calls", 300], ("--calls",)),
    (["--guidance", "nan"], ("--guidance",)),
    (["--resume"], ("--resume: no training checkpoint",)),
    (["--teacher", "missing.safetensors"], ("model file not found: missing.safetensors",)),
    (["--prediction", "eps"], ("--prediction", "invalid choice")),
    (["--student-width", 12], ("--student-width must be a multiple of the teacher's width 8", "16")),
    (["--student-width", 0], ("--student-width",)),
    (["--adversarial", -1], ("--adversarial", ">= 0")),
    (["--adversarial", 1000], ("bad --adversarial",)),
    (["--adversarial-start", 1], ("bad --adversarial-start",)),
    (["--adversarial-sample", -1], ("--adversarial-sample", ">= 0")),
    (["--dmd", 0.5], ("--dmd distils in one round", "--jump 5")),
    (["--dmd-fake-steps", 0], ("--dmd-fake-steps",)),
    (["--dmd-weight", "fixed"], ("--dmd-weight", "invalid choice")),
    (["--jump", 4, "--dmd", 0.5, "--dmd-t-max", 0.01], ("bad --dmd-t-max",)),
    (["--jump", 4, "--dmd-gan", 0.5], ("--dmd-gan 0.5 needs --dmd",)),
    (["--jump", 4, "--dmd", 0.5, "--dmd-gan", -1], ("--dmd-gan", ">= 0")),
    (["--squared-error", 0], ("--squared-error 0 leaves nothing to train",)),
    (["--squared-error", -1], ("--squared-error", ">= 0")),
])
def test_bad_distill_input_is_one_line_and_writes_nothing(teacher_folder, tmp_path, capsys, extra, words):
    args = distill_args(teacher_folder, "unused.safetensors", *extra)
    args[args.index("--out") + 1] = tmp_path / "bad.safetensors"
    assert run(args) == 2
    one_line_error(capsys, *words)
    assert list(tmp_path.iterdir()) == []


def test_distill_refuses_missing_labels_a_student_teacher_and_an_existing_run(finished, teacher_folder, tmp_path,
                                                                              capsys):
    args = distill_args(teacher_folder, "unused.safetensors")
    args[args.index("--out") + 1] = tmp_path / "new.safetensors"
    no_labels = args[:args.index("--labels")] + args[args.index("--labels") + 2:]
    assert run(no_labels) == 2
    one_line_error(capsys, "5 context classes", "--labels with 5 columns")
    student_teacher = list(args)
    student_teacher[student_teacher.index("--teacher") + 1] = finished
    assert run(student_teacher) == 2
    one_line_error(capsys, "already a 2-call distilled student")
    assert list(tmp_path.iterdir()) == []
    assert run(distill_args(teacher_folder)) == 2
    one_line_error(capsys, "already holds a run", "--resume", "--overwrite")


@pytest.mark.parametrize("change, words", [
    ({"sampler": "ddpm"}, ("student.sampler must be 'ddim'",)),
    ({"timesteps": [500, 600, 0]}, ("student.timesteps must be strictly decreasing",)),
    ({"timesteps": [500, 250, 1]}, ("student.timesteps must end at 0",)),
    ({"guidance": -1}, ("student.guidance must be a finite number >= 0",)),
    ({"teacher": "x"}, ("student.teacher must be an object",)),
])
def test_a_damaged_student_section_is_a_one_line_error(finished, tmp_path, change, words):
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(finished), framework="pt") as f:
        config = json.loads(f.metadata()["spritediff"])
    config["student"].update(change)
    damaged = tmp_path / "damaged.safetensors"
    save_file(load_file(str(finished)), str(damaged), metadata={"spritediff": json.dumps(config)})
    with pytest.raises(spritediff.SpriteDiffError) as info:
        spritediff.load(damaged)
    assert all(word in str(info.value) for word in words) and "\n" not in str(info.value), str(info.value)


def test_distill_guidance_default_is_the_one_declaration():
    """distill's default --guidance is sample's, read from spritediff.defaults (distill_config and distill_cli import
    no torch at the top: tests/test_cli_layout.py checks them with the other light modules and distill --help)."""
    from spritediff.cli import build_parser
    from spritediff.defaults import DEFAULT_GUIDANCE

    assert DistillConfig().guidance == DEFAULT_GUIDANCE
    argv = ["distill", "--teacher", "t", "--data", "d", "--out", "o"]
    assert build_parser(argv).parse_args(argv).guidance is None  # None: the teacher's classes decide (run_distill)


# --- the latent tools on a student: interpolate from seeds decodes on its grid; inversion and edits are refused ---

def test_interpolate_from_seeds_decodes_on_the_students_grid_and_its_ends_are_its_samples(finished):
    student = load_model(finished)
    result = spritediff.interpolate(student, seeds=(3, 4), frames=3, context="hero")
    assert result.nfe == 2 and result.settings["steps"] == 2 and result.settings["timesteps"] == [500, 250, 0]
    assert result.settings["guidance"] == 0.5 and result.settings["student"]["calls"] == 2
    for end, seed in ((0, 3), (2, 4)):
        alone = spritediff.sample(student, n=1, seed=seed, context="hero", precision="fp32", frames=False)
        assert np.abs(result.images[end].astype(int) - alone.images[0].astype(int)).max() <= 1


@pytest.mark.parametrize("call, words", [
    (lambda m, img: spritediff.invert(m, img), ("invert:", "2-call distilled student", "upwards")),
    (lambda m, img: spritediff.interpolate(m, images=np.stack([img, img])), ("interpolate --images", "--seeds")),
    (lambda m, img: spritediff.edit(m, img, strength=0.5), ("edit:", "SDEdit")),
    (lambda m, img: spritediff.interpolate(m, seeds=(1, 2), steps=4), ("steps 4", "2-call")),
    (lambda m, img: spritediff.interpolate(m, seeds=(1, 2), guidance=1.0), ("guidance 1.0",)),
])
def test_the_latent_tools_refuse_what_a_student_cannot_do_in_one_line(finished, call, words):
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(spritediff.SpriteDiffError) as info:
        call(load_model(finished), image)
    assert all(word in str(info.value) for word in words) and "\n" not in str(info.value), str(info.value)


def test_invert_cli_on_a_student_is_one_line_and_writes_nothing(finished, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 16, 16, 3), np.uint8))
    assert run(["invert", tmp_path / "x.npy", "--model", finished, "--out", tmp_path / "o"]) == 2
    one_line_error(capsys, "invert:", "distilled student")
    assert not (tmp_path / "o").exists()
    assert run(["interpolate", "--seeds", 1, 2, "--frames", 2, "--model", finished, "--out", tmp_path / "i"]) == 0
    assert json.loads((tmp_path / "i" / "run.json").read_text())["steps"] == 2


# --- eval and bench on a student: its own sampler by default ('student'), others refused before any work ---

def test_eval_on_a_student_defaults_to_its_own_sampler(finished, tmp_path):
    rng = np.random.default_rng(0)
    real = np.zeros((16, 16, 16, 3), np.uint8)
    real[:, 3:13, 4:12] = rng.integers(0, 256, (16, 10, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "real.npy", real)
    assert run(["eval", "--model", finished, "--data", tmp_path / "real.npy", "--n", 6, "--no-two-sample",
                "--context", "mix", "--precision", "fp32", "--out", tmp_path / "e"]) == 0
    record = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert [(r["spec"], r["nfe"]) for r in record["results"]] == [("ddim:2", 2)]
    assert record["guidance"] == 0.5 and record["student"]["timesteps"] == [500, 250, 0]
    assert record["noise"]["two_seeds"]["spec"] == "ddim:2"


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_eval_and_bench_refuse_a_students_other_specs_in_one_line(finished, tmp_path, capsys, command):
    extra = ["--data", tmp_path / "none.npy", "--out", tmp_path / "e"] if command == "eval" else []
    assert run([command, "--model", finished, "--samplers", "student,ddim:20", *extra]) == 2
    one_line_error(capsys, "steps 20", "2-call distilled student")
    assert not (tmp_path / "e").exists()


def test_bench_on_a_student_times_its_own_sampler(finished):
    from spritediff.bench import bench

    report = bench(load_model(finished), n=2, repeat=1, precisions=("fp32",))
    assert [(row.spec.name, row.spec.steps, row.nfe) for row in report.rows] == [("ddim", 2, 2)]
    with pytest.raises(spritediff.SpriteDiffError, match="not a student"):
        bench(tiny_model(), "student", n=2, repeat=1)


def test_squared_error_zero_leaves_the_student_to_the_matching_terms(teacher_folder, monkeypatch):
    """--squared-error 0 (DMD2's loss): while the fake score learns alone (the first half of this round) the student's
    weights do not move at all (its BatchNorm statistics do: it still runs forward), its squared error is still
    logged, and once the matching term joins the student moves, elsewhere than with the squared error kept."""
    shared = ("--jump", 4, "--dmd", 0.5, "--adversarial-start", 0.5, "--steps-per-round", 4)
    args = distill_args(teacher_folder, "no_mse.safetensors", *shared, "--squared-error", 0)
    assert run_interrupted(monkeypatch, 2, args) == 130
    warm = read_state(teacher_folder / "no_mse.train.pt")
    assert warm["step"] == 2
    weights = [name for name, _ in tiny_model().net.named_parameters()]  # the student is the teacher's net
    assert len(weights) > 50 and all(torch.equal(warm["student"][k], warm["teacher"][k]) for k in weights)
    assert run([*args, "--resume"]) == 0
    log = [json.loads(line) for line in (teacher_folder / "no_mse.log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(entry["loss"] > 0 for entry in log)
    assert run(distill_args(teacher_folder, "with_mse.safetensors", *shared)) == 0
    end, kept = (read_state(teacher_folder / f"{name}.train.pt") for name in ("no_mse", "with_mse"))
    assert not all(torch.equal(end["student"][k], end["teacher"][k]) for k in weights)
    assert not all(torch.equal(end["student"][k], kept["student"][k]) for k in weights)
    assert load_model(teacher_folder / "no_mse.safetensors").info["config"]["squared_error"] == 0
