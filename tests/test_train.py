"""Training: data loading and its errors, exact resume after SIGKILL, DDP equals one process, NaN stop."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_line_error, run, small_data

from spritediff import train as train_module
from spritediff.checkpoint import load_model
from spritediff.cli import main
from spritediff.data import base_set, load_data
from spritediff.errors import SpriteDiffError
from spritediff.train import TrainConfig, Trainer, batch_indices, run_training, state_path

REPO = Path(__file__).resolve().parents[1]


def test_course_files_load_as_they_are(sprites_dir, tmp_path):
    base = np.load(sprites_dir / "sprites_base1788_16x16.npy")
    labels = np.load(sprites_dir / "sprite_labels_base1788.npy")
    np.save(tmp_path / "sprites_1788_16x16.npy", np.tile(base, (50, 1, 1, 1)))
    np.save(tmp_path / "sprite_labels_nc_1788_16x16.npy", np.tile(labels, (50, 1)))
    data = load_data(tmp_path / "sprites_1788_16x16.npy", tmp_path / "sprite_labels_nc_1788_16x16.npy")
    assert len(data) == 89_400 and data.classes == ("hero", "non-hero", "food", "spell", "side-facing")
    assert data.labels.sum(0).tolist() == [8000, 32400, 6000, 35000, 8000]
    assert data.images.shape == (89_400, 16, 16, 3) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[0], data.images[1788])  # the course's tiling, kept as it is
    b, bl = base_set(data.images.numpy(), data.labels.numpy())
    assert np.array_equal(b, base) and len(bl) == 1788


def test_image_folder(tmp_path):
    for name, colour in (("cats", 10), ("dogs", 200)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16, 3), colour + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_data(tmp_path)
    assert len(data) == 6 and data.classes == ("cats", "dogs") and data.labels[:, 1].tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("case,message", [
    ("wrong_shape", "expected (N,H,H,3) RGB or (N,H,H,4) RGBA images"),
    ("wrong_dtype", "expected uint8"),
    ("label_count", "expected (40, K) labels"),
    ("empty_folder", "has no images"),
    ("missing", "not found"),
    ("mixed_sizes", "differ in size"),
])
def test_bad_data_is_a_clear_error_before_training(tmp_path, capsys, case, message):
    x, y = small_data(tmp_path, n=40)
    data, labels = x, y
    if case == "wrong_shape":
        np.save(tmp_path / "bad.npy", np.zeros((4, 16, 16), np.uint8)); data = tmp_path / "bad.npy"
    elif case == "wrong_dtype":
        np.save(tmp_path / "bad.npy", np.zeros((4, 16, 16, 3), np.float32)); data = tmp_path / "bad.npy"
    elif case == "label_count":
        np.save(tmp_path / "bad.npy", np.eye(5)[:3]); labels = tmp_path / "bad.npy"
    elif case == "empty_folder":
        (tmp_path / "folder" / "hero").mkdir(parents=True); data, labels = tmp_path / "folder", None
    elif case == "missing":
        data = tmp_path / "nope.npy"
    elif case == "mixed_sizes":
        (tmp_path / "f" / "a").mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "f" / "a" / "1.png")
        Image.new("RGB", (8, 8)).save(tmp_path / "f" / "a" / "2.png")
        data, labels = tmp_path / "f", None
    args = ["train", "--data", data, "--out", tmp_path / "m.safetensors", "--steps", 2] + (["--labels", labels] if labels else [])
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.log.jsonl").exists()


def test_batches_walk_epochs_of_permutations():
    rows = torch.cat([batch_indices(s, 7, 20, seed=3) for s in range(6)])  # 42 rows: 2 epochs + 2
    assert sorted(rows[:20].tolist()) == list(range(20)) and sorted(rows[20:40].tolist()) == list(range(20))
    assert not torch.equal(rows[:20], rows[20:40])
    assert torch.equal(batch_indices(4, 7, 20, seed=3), rows[28:35])


def train_args(x, y, out, steps, extra=()):
    return [sys.executable, "-m", "spritediff", "train", "--data", str(x), "--labels", str(y), "--out", str(out),
            "--steps", str(steps), "--batch", "8", "--n-feat", "8", "--ckpt-every", "5", "--seed", "1", *extra]


def thread_env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    x, y = small_data(tmp_path, n=40)
    steps = 400
    whole = tmp_path / "whole.safetensors"
    subprocess.run(train_args(x, y, whole, steps), check=True, env=thread_env(), capture_output=True)

    cut = tmp_path / "cut.safetensors"
    proc = subprocess.Popen(train_args(x, y, cut, steps), env=thread_env(), stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not state_path(cut).exists() and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(state_path(cut), weights_only=True)["step"]
    assert 0 < done < steps, "the run must be killed part-way for this test to mean anything"
    subprocess.run(train_args(x, y, cut, steps, ["--resume"]), check=True, env=thread_env(), capture_output=True)

    a = torch.load(state_path(whole), weights_only=True)
    b = torch.load(state_path(cut), weights_only=True)
    assert a["step"] == b["step"] == steps
    for part in ("net", "ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    lines = (tmp_path / "cut.log.jsonl").read_text().splitlines()
    assert len(lines) >= steps  # the steps after the last checkpoint were logged twice


def test_one_ddp_step_equals_one_process_step(tmp_path):
    """Gradients, loss and BatchNorm statistics of a 2-process gloo step equal the 1-process step on the
    same global batch (weights after Adam are no test: Adam turns the ~1e-10 float noise in the gradients
    of conv biases that feed a BatchNorm, exactly 0 in exact arithmetic, into lr-sized moves)."""
    from ddp_worker import one_step_record

    x, y = small_data(tmp_path, n=40)
    worker = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
              str(Path(__file__).with_name("ddp_worker.py")), str(x), str(y), str(tmp_path / "ddp.pt")]
    proc = subprocess.run(worker, env=thread_env(), capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = one_step_record(Trainer(TrainConfig(steps=4, batch=8, n_feat=8, seed=1), load_data(x, y),
                                     torch.device("cpu")))
    torch.testing.assert_close(ddp["loss"], single["loss"], rtol=1e-6, atol=0)
    for kind in ("grads", "buffers"):
        for name, value in single[kind].items():
            torch.testing.assert_close(ddp[kind][name], value, rtol=1e-4, atol=1e-6, msg=f"{kind} {name}")


def test_torchrun_cli_trains_and_records_the_world(tmp_path):
    x, y = small_data(tmp_path, n=40)
    out = tmp_path / "double.safetensors"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "spritediff"]
    proc = subprocess.run(torchrun + train_args(x, y, out, 3)[3:], env=thread_env(), capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote") == 1  # rank 0 alone reports
    from spritediff.checkpoint import load_model
    assert load_model(out).info["world_size"] == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    x, y = small_data(tmp_path, n=40)
    data = load_data(x, y)
    real_loss = train_module.diffusion_loss
    calls = []

    def loss_that_breaks(*args):
        calls.append(1)
        loss = real_loss(*args)
        return loss * float("nan") if len(calls) == 8 else loss

    monkeypatch.setattr(train_module, "diffusion_loss", loss_that_breaks)
    out = tmp_path / "m.safetensors"
    config = TrainConfig(steps=20, batch=8, n_feat=8)
    with pytest.raises(SpriteDiffError, match="loss became nan at step 8"):
        run_training(config, data, out, torch.device("cpu"), ckpt_every=5, progress=False)
    assert torch.load(state_path(out), weights_only=True)["step"] == 5
    assert out.exists()


def test_resume_refuses_other_settings(tmp_path):
    x, y = small_data(tmp_path, n=40)
    data = load_data(x, y)
    out = tmp_path / "m.safetensors"
    run_training(TrainConfig(steps=2, batch=8, n_feat=8), data, out, torch.device("cpu"), 1, progress=False)
    with pytest.raises(SpriteDiffError, match="other settings"):
        run_training(TrainConfig(steps=4, batch=8, n_feat=8, lr=5e-4), data, out, torch.device("cpu"), 1,
                     resume=True, progress=False)


def course_alpha_bar() -> torch.Tensor:
    """(501,) float32 ab_t of the course schedule, from its definition (docs/design.md 4.1), not from Schedule."""
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 501))
    ab[0] = 1.0
    return torch.from_numpy(ab).float()


def test_trainer_loss_uses_sqrt_of_one_minus_alpha_bar():
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) noise. The course's notebook perturbs with (1 - ab) noise; x0 is nonzero
    so that ab x0 in place of sqrt(ab) x0 fails too (by 1.2e-4 x0 even at t = 1)."""
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x_t, t, c):
            seen["x_t"], seen["t"] = x_t, t
            return torch.zeros_like(x_t)

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(4, 3, 16, 16, generator=g)
    t = torch.tensor([1, 100, 250, 500])
    ab = course_alpha_bar()
    loss = train_module.diffusion_loss(Spy(), x0, None, t, noise, ab, 500)
    a = ab[t].double().view(-1, 1, 1, 1)
    expected = a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()
    torch.testing.assert_close(seen["x_t"].double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(seen["t"], t / 500)
    torch.testing.assert_close(loss, noise.pow(2).mean())  # the net said eps = 0: the loss is mean(noise^2)


def test_a_32x32_model_trains_saves_and_samples_at_its_size(tmp_path):
    """Pixel art at 32 px: the data's size becomes the model's, recorded in its file, and samples come out 32x32."""
    import spritediff
    from spritediff.cli import main

    x, y = small_data(tmp_path, n=24, size=32)
    out = tmp_path / "m32.safetensors"
    assert main(["train", "--data", str(x), "--labels", str(y), "--out", str(out),
                 "--steps", "2", "--batch", "8", "--n-feat", "8"]) == 0
    model = spritediff.load(out)
    assert model.net.height == 32
    images = spritediff.sample(model, "ddim", 3, n=2, context="class0", seed=0, frames=False).images
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_trainer_leaves_the_global_rng_alone(tmp_path):
    """The initial weights come from the run's seed without reseeding the caller's generator."""
    from spritediff.data import SpriteData
    from spritediff.train import TrainConfig, Trainer

    data = SpriteData(torch.zeros(8, 16, 16, 3, dtype=torch.uint8), None, ())
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = Trainer(TrainConfig(steps=1, batch=4, n_feat=8, seed=5), data, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)
    b = Trainer(TrainConfig(steps=1, batch=4, n_feat=8, seed=5), data, torch.device("cpu"))
    assert all(torch.equal(v, b.net.state_dict()[k]) for k, v in a.net.state_dict().items())


# --- the recipe: lr decay, context dropout, EMA, and what the model file holds ------------------------------------


def tiny_trainer(tmp_path, **config) -> Trainer:
    """A Trainer on 40 random labelled 16x16 images with a width-8 net (fast on the CPU)."""
    x, y = small_data(tmp_path, n=40)
    settings = {"steps": 3, "batch": 8, "n_feat": 8, "seed": 1, **config}
    return Trainer(TrainConfig(**settings), load_data(x, y), torch.device("cpu"))


def test_learning_rate_decays_linearly_to_zero(tmp_path):
    """Adam steps at lr (1 - k / steps) for k = 0..steps-1: with lr 1e-3 over 4 steps, 1e-3, 7.5e-4, 5e-4, 2.5e-4."""
    trainer = tiny_trainer(tmp_path, steps=4, lr=1e-3)
    used = []
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    for _ in range(4):
        trainer.train_step()
    assert used == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4], rel=1e-12, abs=0)


def test_context_is_dropped_for_one_row_in_ten(tmp_path, monkeypatch):
    """Over 10 steps of 2,000 rows the number of rows trained without context is Binomial(n, 0.1): each step
    within 6 sd of 200 (a whole-batch dropout gives 0 or 2,000) and the total within 6 sd of 2,000. A dropped
    row's context is all zeros; a kept row's is its label, unchanged."""
    trainer = tiny_trainer(tmp_path, batch=2000, steps=10)
    assert trainer.config.context_drop == 0.1  # the course's rate is the default
    seen = []

    def spy_loss(net, x0, c, t, noise, *rest):
        seen.append(c.clone())
        return sum(p.sum() for p in net.parameters()) * 0.0  # no forward pass: only the contexts matter here

    monkeypatch.setattr(train_module, "diffusion_loss", spy_loss)
    for _ in range(10):
        trainer.train_step()
    dropped = []
    for c in seen:
        zero = c.abs().sum(1) == 0
        assert torch.all(c[~zero].sum(1) == 1) and torch.all(c[~zero].max(1).values == 1)  # one-hot labels, kept whole
        dropped.append(int(zero.sum()))
    n, p = 2000, 0.1
    assert all(abs(k - n * p) <= 6 * (n * p * (1 - p)) ** 0.5 for k in dropped), dropped
    assert abs(sum(dropped) - 10 * n * p) <= 6 * (10 * n * p * (1 - p)) ** 0.5, sum(dropped)


def record_raw_weights(monkeypatch) -> list[dict]:
    """Patch Trainer.train_step to keep a float64 copy of the live weights and buffers after every step."""
    states, real_step = [], Trainer.train_step

    def step_and_record(self):
        loss = real_step(self)
        states.append({k: v.detach().double().clone() for k, v in self.net.state_dict().items()
                       if v.is_floating_point()})
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_and_record)
    return states


def hand_ema(states: list[dict], decay: float, warmup: bool = False) -> dict:
    """e_1 = w_1, e_k = d e_(k-1) + (1 - d) w_k (torch's AveragedModel: the first update copies), d = decay or,
    with warm-up, min(decay, k / (k + 9)) (k - 1 updates before the k-th)."""
    ema = dict(states[0])
    for k, state in enumerate(states[1:], start=2):
        d = min(decay, k / (k + 9)) if warmup else decay
        ema = {key: d * ema[key] + (1 - d) * w for key, w in state.items()}
    return ema


def assert_matches(state: dict, expected: dict, atol: float) -> None:
    for key, value in expected.items():
        torch.testing.assert_close(state[key].double(), value, rtol=0, atol=atol, msg=key)


def test_ema_has_decay_0999_over_weights_and_batchnorm_statistics(tmp_path, monkeypatch):
    """Three steps at a large lr (0.1: each weight moves ~0.1 a step), so that a decay of 0.99 or 0.9999 misses
    the hand-computed EMA by ~1e-4, far above float32 rounding."""
    assert TrainConfig().ema == 0.999
    states = record_raw_weights(monkeypatch)
    trainer = tiny_trainer(tmp_path, lr=0.1, ema_warmup=False)
    for _ in range(3):
        trainer.train_step()
    ema = {k: v for k, v in trainer.ema.module.state_dict().items() if v.is_floating_point()}
    assert any("running_mean" in k for k in ema)  # the buffers are averaged too
    assert_matches(ema, hand_ema(states, 0.999), atol=1e-6)


def test_ema_warmup_starts_with_short_memory_and_reaches_the_decay(tmp_path, monkeypatch):
    """Warm-up decays 2/11 and 3/12 for the second and third steps: far from 0.999 at lr 0.1, so this fails if the
    warm-up is ignored or off by one step."""
    states = record_raw_weights(monkeypatch)
    trainer = tiny_trainer(tmp_path, lr=0.1, ema_warmup=True)
    for _ in range(3):
        trainer.train_step()
    ema = {k: v for k, v in trainer.ema.module.state_dict().items() if v.is_floating_point()}
    assert_matches(ema, hand_ema(states, 0.999, warmup=True), atol=1e-6)
    gap = max((ema[k].double() - v).abs().max().item() for k, v in hand_ema(states, 0.999).items())
    assert gap > 1e-3


@pytest.mark.parametrize("bn_stats", ["ema", "live"])
def test_bn_stats_live_saves_the_live_nets_statistics_with_the_ema_weights(tmp_path, monkeypatch, bn_stats):
    """--bn-stats live (the course's recipe): after every step the EMA net's BatchNorm buffers are the live net's,
    while its weights stay the EMA's; ema (the default) keeps averaging both."""
    assert TrainConfig().bn_stats == "ema"
    states = record_raw_weights(monkeypatch)
    trainer = tiny_trainer(tmp_path, lr=0.1, ema_warmup=False, bn_stats=bn_stats)
    for _ in range(3):
        trainer.train_step()
    ema, live = trainer.ema.module.state_dict(), trainer.net.state_dict()
    buffers = [k for k in live if "running_" in k]
    assert buffers
    same = [torch.equal(ema[k], live[k]) for k in buffers]
    assert all(same) if bn_stats == "live" else not any(same)
    weights = {k: v for k, v in hand_ema(states, 0.999).items() if "running_" not in k}
    assert_matches(ema, weights, atol=1e-6)


@pytest.mark.parametrize("field, value", [("ema_warmup", 1), ("ema_warmup", "yes"), ("steps", True)])
def test_config_refuses_a_bool_for_a_number_and_a_number_for_a_bool(field, value):
    with pytest.raises(SpriteDiffError, match=f"bad --{field.replace('_', '-')}"):
        TrainConfig(**{field: value}).check()


@pytest.mark.parametrize("flags, warmup", [([], True), (["--no-ema-warmup"], False)])
def test_ema_warmup_is_on_unless_turned_off(tmp_path, flags, warmup):
    from spritediff.checkpoint import load_model

    x, y = small_data(tmp_path, n=40)
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data", str(x), "--labels", str(y), "--out", str(out), "--n-feat", "8", "--steps", "2",
                 "--batch", "8", *flags]) == 0
    assert load_model(out).info["config"]["ema_warmup"] is warmup


def test_a_run_from_before_the_warmup_resumes_only_without_it(tmp_path):
    """A checkpoint whose config has no ema_warmup used the fixed decay: resuming it with the warm-up would change
    its EMA rule halfway, so that is refused."""
    x, y = small_data(tmp_path, n=40)
    data, out = load_data(x, y), tmp_path / "m.safetensors"
    run_training(TrainConfig(steps=1, batch=8, n_feat=8, ema_warmup=False), data, out, torch.device("cpu"),
                 progress=False)
    state = torch.load(state_path(out), weights_only=True)
    del state["config"]["ema_warmup"]
    torch.save(state, state_path(out))
    with pytest.raises(SpriteDiffError, match="ema_warmup"):
        run_training(TrainConfig(steps=2, batch=8, n_feat=8), data, out, torch.device("cpu"), resume=True,
                     progress=False)
    run_training(TrainConfig(steps=2, batch=8, n_feat=8, ema_warmup=False), data, out, torch.device("cpu"),
                 resume=True, progress=False)


def test_saved_model_holds_the_ema_weights_not_the_raw_ones(tmp_path, monkeypatch):
    states = record_raw_weights(monkeypatch)
    x, y = small_data(tmp_path, n=40)
    out = tmp_path / "m.safetensors"
    config = TrainConfig(steps=3, batch=8, n_feat=8, seed=1, lr=0.1, ema=0.5, ema_warmup=False)
    run_training(config, load_data(x, y), out, torch.device("cpu"), progress=False, dtype=torch.float32)
    from spritediff.checkpoint import load_model

    saved = load_model(out).net.state_dict()
    assert_matches(saved, hand_ema(states, 0.5), atol=1e-6)
    raw = states[-1]["init_conv.conv1.0.weight"]
    assert (saved["init_conv.conv1.0.weight"].double() - raw).abs().max() > 1e-2  # the EMA is far from the raw weights


@pytest.mark.parametrize("epochs, batch, steps", [
    ("0.5", 6, 4),  # half of 40 images is 20; in batches of 6: 3 full batches and one part-batch
    ("2", 8, 10),   # 80 images in batches of 8: exactly 10 steps, no extra one
])
def test_epochs_sets_the_number_of_steps(tmp_path, capsys, epochs, batch, steps):
    x, y = small_data(tmp_path, n=40)
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data", str(x), "--labels", str(y), "--out", str(out), "--epochs", epochs,
                 "--batch", str(batch), "--n-feat", "8"]) == 0
    from spritediff.checkpoint import load_model

    info = load_model(out).info
    assert info["steps_done"] == steps and info["config"]["steps"] == steps and info["config"]["batch"] == batch
    assert len((tmp_path / "m.log.jsonl").read_text().splitlines()) == steps
    assert f"after {steps} steps" in capsys.readouterr().out


def test_min_snr_gamma_weights_each_sample_as_the_paper_says():
    """Hang et al. 2023: x0-space weight min(SNR, gamma); for eps that is min(SNR, gamma) / SNR, for v / (SNR + 1)."""
    ab = torch.tensor([0.99, 0.5, 0.01], dtype=torch.float64)
    snr = [99.0, 1.0, 1 / 99]
    for prediction, expected in (("eps", [5 / 99, 1.0, 1.0]), ("x0", [5.0, 1.0, 1 / 99]),
                                 ("v", [5 / 100, 1 / 2, (1 / 99) / (1 / 99 + 1)])):
        got = train_module.min_snr_weight(ab, 5.0, prediction)
        assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64)), (prediction, snr)


def test_min_snr_loss_is_the_weighted_mean_and_zero_gamma_is_plain_mse():
    torch.manual_seed(0)
    x0, noise = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 3, 16, 16)
    t = torch.tensor([1, 250, 500])
    from spritediff.schedule import Schedule

    ab = Schedule.course().alphas_cumprod.float()

    class Zero(torch.nn.Module):
        def forward(self, x, time, c):
            return torch.zeros_like(x)

    plain = train_module.diffusion_loss(Zero(), x0, None, t, noise, ab, 500)
    assert torch.allclose(plain, noise.pow(2).mean())
    weighted = train_module.diffusion_loss(Zero(), x0, None, t, noise, ab, 500, "fp32", "eps", 5.0)
    a = ab[t].double()
    weights = (a / (1 - a)).clamp(max=5.0) / (a / (1 - a))
    expected = (weights * noise.double().pow(2).flatten(1).mean(1)).mean()
    assert torch.allclose(weighted.double(), expected, rtol=1e-6)
    assert weights[0] < 0.1 and weights[2] == 1  # low noise (t = 1) is weighted down, high noise kept


def test_input_perturbation_moves_the_input_and_keeps_the_target():
    """DDPM-IP: the net sees x_t built from noise + gamma xi, the loss still targets the noise; gamma 0 draws as before."""
    from spritediff.schedule import Schedule

    config = TrainConfig(batch=4, seed=3)
    t, noise, keep, same = train_module.step_draws(config, 7, (3, 16, 16))
    assert same is noise  # off: x_t is built from the target noise itself
    t2, noise2, keep2, perturbed = train_module.step_draws(replace(config, input_perturbation=0.1), 7, (3, 16, 16))
    assert torch.equal(t, t2) and torch.equal(noise, noise2) and torch.equal(keep, keep2)  # the other draws unchanged
    xi = (perturbed - noise) / 0.1
    assert 0.9 < xi.std().item() < 1.1 and abs(torch.corrcoef(torch.stack([xi.flatten(), noise.flatten()]))[0, 1]) < 0.1
    ab = Schedule.course().alphas_cumprod.float()
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    seen = []

    class Echo(torch.nn.Module):  # outputs its input: the loss is then |x_t - noise|^2, which shows x_t
        def forward(self, x, time, c):
            seen.append(x)
            return x

    loss = train_module.diffusion_loss(Echo(), x0, None, t, noise, ab, 500, input_noise=perturbed)
    a = ab[t].view(-1, 1, 1, 1)
    assert torch.allclose(seen[0], a.sqrt() * x0 + (1 - a).sqrt() * perturbed)
    assert torch.allclose(loss, (seen[0] - noise).pow(2).mean())


# --- fine-tuning: --init ------------------------------------------------------------------------------------------


def parameters(state: dict) -> dict:
    """The trainable weights of a state_dict (BatchNorm's running statistics move even at lr ~ 0)."""
    return {k: v for k, v in state.items() if v.is_floating_point() and "running_" not in k}


def test_init_starts_the_net_and_its_ema_from_the_model(tmp_path):
    from spritediff.checkpoint import load_model

    x, y = small_data(tmp_path, n=40)
    data, first = load_data(x, y), tmp_path / "first.safetensors"
    run_training(TrainConfig(steps=2, batch=8, n_feat=8, seed=1), data, first, torch.device("cpu"), progress=False,
                 dtype=torch.float32)
    tuned = tmp_path / "tuned.safetensors"
    run_training(TrainConfig(steps=1, batch=8, n_feat=8, seed=2, lr=1e-9, init=str(first)), data, tuned,
                 torch.device("cpu"), progress=False, dtype=torch.float32)
    fresh = tmp_path / "fresh.safetensors"
    run_training(TrainConfig(steps=1, batch=8, n_feat=8, seed=2, lr=1e-9), data, fresh, torch.device("cpu"),
                 progress=False, dtype=torch.float32)
    start = parameters(load_model(first).net.state_dict())
    for name, weights in ((tuned, 1e-6), (fresh, None)):
        saved = parameters(load_model(name).net.state_dict())
        gap = max((saved[k] - start[k]).abs().max().item() for k in start)
        assert gap < 1e-6 if weights else gap > 1e-2, (name.name, gap)
    assert load_model(tuned).info["config"]["init"] == str(first)


def test_init_refuses_a_model_of_another_width_in_one_line_and_writes_nothing(tmp_path, capsys):
    x, y = small_data(tmp_path, n=40)
    first = tmp_path / "first.safetensors"
    run_training(TrainConfig(steps=1, batch=8, n_feat=8), load_data(x, y), first, torch.device("cpu"),
                 progress=False)
    out = tmp_path / "tuned.safetensors"
    code = main(["train", "--data", str(x), "--labels", str(y), "--out", str(out), "--n-feat", "16", "--steps", "1",
                 "--batch", "8", "--init", str(first)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--init" in err and "n_feat 8 vs 16" in err and len(err.splitlines()) == 1
    assert not any(tmp_path.glob("tuned*"))


def test_a_fine_tuning_run_resumes_only_with_its_init(tmp_path):
    x, y = small_data(tmp_path, n=40)
    data, first, out = load_data(x, y), tmp_path / "first.safetensors", tmp_path / "tuned.safetensors"
    run_training(TrainConfig(steps=1, batch=8, n_feat=8), data, first, torch.device("cpu"), progress=False)
    run_training(TrainConfig(steps=1, batch=8, n_feat=8, init=str(first)), data, out, torch.device("cpu"),
                 progress=False)
    with pytest.raises(SpriteDiffError, match="other settings"):
        run_training(TrainConfig(steps=2, batch=8, n_feat=8), data, out, torch.device("cpu"), resume=True,
                     progress=False)
    first.unlink()  # a resumed run takes its weights from the checkpoint, not from --init
    run_training(TrainConfig(steps=2, batch=8, n_feat=8, init=str(first)), data, out, torch.device("cpu"),
                 resume=True, progress=False)


def test_init_with_overwrite_replaces_the_run_and_a_misfit_init_leaves_it_whole(tmp_path):
    x, y = small_data(tmp_path, n=40)
    data, first, out = load_data(x, y), tmp_path / "first.safetensors", tmp_path / "run.safetensors"
    run_training(TrainConfig(steps=1, batch=8, n_feat=8), data, first, torch.device("cpu"), progress=False)
    run_training(TrainConfig(steps=3, batch=8, n_feat=16), data, out, torch.device("cpu"), progress=False)
    log = (tmp_path / "run.log.jsonl").read_text()
    with pytest.raises(SpriteDiffError, match="--init"):
        run_training(TrainConfig(steps=2, batch=8, n_feat=16, init=str(first)), data, out, torch.device("cpu"),
                     progress=False, overwrite=True)
    assert (tmp_path / "run.log.jsonl").read_text() == log and state_path(out).is_file()
    run_training(TrainConfig(steps=2, batch=8, n_feat=8, init=str(first)), data, out, torch.device("cpu"),
                 progress=False, overwrite=True)
    assert len((tmp_path / "run.log.jsonl").read_text().splitlines()) == 2  # the 3-step run's log is gone


def test_lr_decay_steps_past_the_end_stops_before_the_anneal(tmp_path):
    """With lr_decay_steps 8 over a 4-step run: lr (1 - k / 8) = 1e-3, 8.75e-4, 7.5e-4, 6.25e-4."""
    trainer = tiny_trainer(tmp_path, steps=4, lr=1e-3, lr_decay_steps=8)
    used = []
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    for _ in range(4):
        trainer.train_step()
    assert used == pytest.approx([1e-3, 8.75e-4, 7.5e-4, 6.25e-4], rel=1e-12, abs=0)
    with pytest.raises(SpriteDiffError, match="lr-decay-steps"):
        TrainConfig(steps=10, lr_decay_steps=9).check()


def test_time_fits_the_run_to_the_budget_and_records_it(tmp_path, capsys):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(["train", "--data", x, "--labels", y, "--out", out, "--n-feat", 8, "--batch", 8, "--time", "4s",
                "--precision", "fp32"]) == 0  # fp32 on every CPU: bf16's first step alone can take seconds
    info = load_model(out).info
    steps, per_step = info["config"]["steps"], info["probe_seconds_per_step"]
    assert info["time_budget_s"] == 4 and info["steps_done"] == steps >= 1
    assert steps * per_step <= 4  # the probe's pace times the steps fits the budget
    assert info["config"]["ema"] == pytest.approx(max(0.0, min(0.999, 1 - 1 / (0.1 * steps))), abs=1e-6)
    assert f"{steps} steps" in capsys.readouterr().err
    assert info["config"]["min_snr_gamma"] == 5.0  # --time's recipe


def test_time_probe_leaves_the_slow_first_steps_out_of_its_pace(tmp_path, monkeypatch):
    """A machine whose first steps are slow (caches, allocator, oneDNN's kernels) must not shorten the run: the
    probe times only steps after its warm-up. On a fake clock the first three steps take 0.3 s, the rest 0.01 s."""
    clock = [0.0]

    def fake_step(self):
        clock[0] += 0.3 if fake_step.calls < train_module.PROBE_WARMUP else 0.01
        fake_step.calls += 1
        return 0.0

    fake_step.calls = 0
    monkeypatch.setattr(Trainer, "train_step", fake_step)
    data = load_data(str(small_data(tmp_path)[0]))
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    config, record = train_module.fit_to_time(TrainConfig(n_feat=8, batch=8), data, torch.device("cpu"), 20.0)
    assert fake_step.calls == train_module.PROBE_WARMUP + train_module.PROBE_STEPS
    assert record["probe_seconds_per_step"] == pytest.approx(0.01)
    spent = 0.3 * train_module.PROBE_WARMUP + 0.01 * train_module.PROBE_STEPS
    assert abs(config.steps - (20.0 - spent) / 0.01) <= 1


def test_time_recipe_yields_to_what_is_given(tmp_path):
    x, y = small_data(tmp_path)
    args = ["train", "--data", x, "--labels", y, "--n-feat", 8, "--batch", 8]
    assert run([*args, "--out", tmp_path / "a.safetensors", "--time", "1s", "--min-snr-gamma", "0"]) == 0
    assert run([*args, "--out", tmp_path / "b.safetensors", "--steps", 1]) == 0
    for name in ("a", "b"):
        assert load_model(tmp_path / f"{name}.safetensors").info["config"]["min_snr_gamma"] == 0.0


@pytest.mark.parametrize("native", [True, False])
def test_time_trains_bf16_where_the_cpu_runs_it_natively(tmp_path, monkeypatch, native):
    monkeypatch.setattr("spritediff.fast.cpu_has_native_bf16", lambda: native)
    x, y = small_data(tmp_path)
    args = ["train", "--data", x, "--labels", y, "--n-feat", 8, "--batch", 8]
    assert run([*args, "--out", tmp_path / "t.safetensors", "--time", "1s"]) == 0
    assert run([*args, "--out", tmp_path / "f.safetensors", "--time", "1s", "--precision", "fp32"]) == 0
    assert run([*args, "--out", tmp_path / "s.safetensors", "--steps", 1]) == 0
    precision = {name: load_model(tmp_path / f"{name}.safetensors").info["config"]["precision"] for name in "tfs"}
    assert precision == {"t": "bf16" if native else "fp32", "f": "fp32", "s": "fp32"}


def test_resume_alone_continues_a_time_run_with_its_fitted_settings(tmp_path):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(["train", "--data", x, "--labels", y, "--out", out, "--n-feat", 8, "--batch", 8, "--time", "1s"]) == 0
    first = load_model(out).info["config"]
    assert first["ema"] != TrainConfig().ema and first["n_feat"] != TrainConfig().n_feat
    steps = first["steps"] + 2
    assert run(["train", "--data", x, "--labels", y, "--out", out, "--resume", "--steps", steps]) == 0
    assert load_model(out).info["config"] == {**first, "steps": steps}


@pytest.mark.parametrize("extra, message", [
    (["--time", "10"], "expected a time such as"),
    (["--time", "1m", "--steps", "5"], "not allowed with argument"),
])
def test_bad_time_is_one_line(tmp_path, capsys, extra, message):
    x, y = small_data(tmp_path)
    assert run(["train", "--data", x, "--labels", y, "--out", tmp_path / "m.safetensors", *extra]) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "m.safetensors").exists()


def test_time_with_resume_is_refused_before_any_work(tmp_path, capsys):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(["train", "--data", x, "--labels", y, "--out", out, "--n-feat", 8, "--steps", 2]) == 0
    assert run(["train", "--data", x, "--labels", y, "--out", out, "--time", "1m", "--resume"]) == 2
    one_line_error(capsys, "--time")


def test_sigterm_during_train_names_the_checkpoint_it_keeps(tmp_path):
    x, y = small_data(tmp_path, n=40)
    out = tmp_path / "m.safetensors"
    proc = subprocess.Popen(train_args(x, y, out, 100_000), env=thread_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not state_path(out).exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    step = torch.load(state_path(out), weights_only=True)["step"]
    assert proc.returncode == 143 and err.count("\n") == 1 and "left as it was" not in err, err
    assert f"last checkpoint, step {step}" in err and "--resume" in err and out.is_file()


def _own_art(root: Path, classes: tuple[str, ...]) -> Path:
    """A folder of 16x16 PNGs: flat without classes, else one subfolder per class."""
    for k, name in enumerate(classes or ("",)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(np.full((16, 16, 3), 40 * k + 9 * i, np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("classes", [(), ("circle", "square")])
def test_a_model_knows_exactly_the_classes_it_was_trained_with(tmp_path, capsys, classes):
    data = _own_art(tmp_path / "art", classes)
    model_path = tmp_path / "m.safetensors"
    assert run(["train", "--data", data, "--out", model_path, "--steps", 2, "--batch", 4, "--n-feat", 8]) == 0
    model = load_model(model_path)
    assert model.classes == classes and model.net.n_cfeat == len(classes) and "credit" not in model.info
    assert model.class_mix == (None if not classes else (0.5, 0.5))
    capsys.readouterr()
    out = tmp_path / "s"
    assert run(["sample", "--model", model_path, "--n", 2, "--steps", 2, "--sampler", "ddim", "--out", out]) == 0
    assert "credit" not in json.loads((out / "run.json").read_text())
    refused = ("hero", "hero=1,food=0.5") + (() if classes else ("random", "mix"))
    for spec in refused:
        assert run(["sample", "--model", model_path, "--n", 2, "--steps", 2, "--context", spec,
                    "--out", tmp_path / "refused"]) == 2
        err = capsys.readouterr().err
        assert ("circle, square" if classes else "this model has no classes") in err, err
        assert err.count("\n") == 1 and not (tmp_path / "refused").exists()
    for spec in ("circle", "random", "mix") if classes else ():
        assert run(["sample", "--model", model_path, "--n", 2, "--steps", 2, "--context", spec,
                    "--out", tmp_path / spec]) == 0


def test_only_the_course_s_sprites_carry_its_credit_line(sprites_dir, tmp_path):
    from spritediff.data import is_course_sprites

    base = np.load(sprites_dir / "sprites_base1788_16x16.npy")
    assert is_course_sprites(base) and is_course_sprites(np.tile(base, (50, 1, 1, 1)))
    changed = base.copy()
    changed[0, 0, 0, 0] ^= 1
    assert not is_course_sprites(changed) and not is_course_sprites(base[:1000])
    from spritediff.sprites import CREDIT, credit_record

    assert credit_record({"credit": CREDIT}) == {"credit": CREDIT} and credit_record({"source": "test"}) == {}


def test_terminal_snr_trains_on_the_rescaled_schedule_and_the_model_keeps_it(tmp_path, capsys):
    """--terminal-snr: the noise the net learns from is the rescaled schedule's (x_500 almost pure noise) and the
    saved model samples with that schedule, read back from its file."""
    from spritediff.checkpoint import load_model, save_model
    from spritediff.cli import main
    from spritediff.schedule import Schedule

    trainer = tiny_trainer(tmp_path, terminal_snr=1e-5, prediction="v")
    rescaled = Schedule.course(terminal_snr=1e-5)
    torch.testing.assert_close(trainer.alphas_cumprod, rescaled.alphas_cumprod.float())
    assert float(trainer.alphas_cumprod[500]) < 1.1e-5
    save_model(trainer.ema_model({}), tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors").schedule
    assert loaded.terminal_snr == 1e-5 and torch.equal(loaded.alphas_cumprod, rescaled.alphas_cumprod)
    x, y = small_data(tmp_path, n=8)
    assert main(["train", "--data", str(x), "--labels", str(y), "--out", str(tmp_path / "bad.safetensors"),
                 "--steps", "1", "--batch", "4", "--n-feat", "8", "--terminal-snr", "0.01"]) == 2
    assert not (tmp_path / "bad.safetensors").exists()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad --terminal-snr" in err and "below the schedule's own 0.00633" in err


def test_norm_group_trains_a_net_that_normalises_the_same_in_training_and_sampling(tmp_path):
    """--norm group: GroupNorm where the course has BatchNorm, so the saved EMA net holds no statistics borrowed
    from another net; its file says so and loads back as the same net. A course-architecture file's metadata has no
    norm key, as before the option."""
    from spritediff.checkpoint import save_model

    x, y = small_data(tmp_path, n=24)
    out = tmp_path / "gn.safetensors"
    assert main(["train", "--data", str(x), "--labels", str(y), "--out", str(out), "--steps", "3", "--batch", "8",
                 "--n-feat", "8", "--norm", "group"]) == 0
    model = load_model(out)
    norms = [type(m).__name__ for m in model.net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    assert "BatchNorm2d" not in norms and norms.count("GroupNorm") == 18 + 2  # 9 blocks of two, and the course's two
    assert model.config()["net"]["norm"] == "group" and model.config()["info"]["config"]["norm"] == "group"
    x_t, t = torch.randn(4, 3, 16, 16), torch.rand(4)
    with torch.no_grad():
        eval_out = model.net.eval()(x_t, t)
        assert torch.equal(model.net.train()(x_t, t), eval_out)  # no running statistics: one function
    save_model(tiny_trainer(tmp_path).ema_model({}), tmp_path / "bn.safetensors")
    assert "norm" not in load_model(tmp_path / "bn.safetensors").config()["net"]
