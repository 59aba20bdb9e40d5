"""`spritediff sample` end to end on a tiny random model: outputs, determinism, bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run, tiny_model
from PIL import Image

import spritediff
from spritediff.context import parse_context
from spritediff.denoiser import Denoiser
from spritediff.errors import SpriteDiffError
from spritediff.schedule import Schedule
from spritediff.sprites import COURSE_CLASSES as CLASSES


def test_sample_writes_grid_gif_array_and_record(tiny_model_path, tmp_path):
    out = tmp_path / "out"
    assert run(["sample", "--model", tiny_model_path, "--sampler", "ddim", "--n", 5, "--nrow", 5, "--out", out]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["denoise.gif", "grid.png", "run.json", "samples.npy"]
    samples = np.load(out / "samples.npy")
    assert samples.shape == (5, 16, 16, 3) and samples.dtype == np.uint8
    record = json.loads((out / "run.json").read_text())
    assert record["sampler"] == "ddim" and record["steps"] == 20 and record["nfe"] == 20 and record["seed"] == 0
    assert record["seconds"] > 0 and record["images_per_second"] > 0
    grid = Image.open(out / "grid.png")
    assert grid.size == (4 * (5 * 17 + 1), 4 * 18)  # nearest x4 of a 1-pixel-bordered 1x5 mosaic
    gif = Image.open(out / "denoise.gif")
    assert gif.n_frames == 21 and gif.size[0] > 2 * grid.size[0]  # 20 steps + the final image, x_t | x0_hat
    big = np.asarray(grid.convert("RGB"))[4:68, 4:68]
    np.testing.assert_array_equal(big[::4, ::4], samples[0])  # a pixel stays a pixel, true colours


def test_defaults_ddpm_all_steps(tiny_model_path, tmp_path):
    assert run(["sample", "--model", tiny_model_path, "--sampler", "ddpm", "--n", 1, "--out", tmp_path]) == 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["steps"] == 500 and record["nfe"] == 500


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_is_bit_identical_and_independent_of_n_and_batch(tiny_model_path, tmp_path, precision):
    for name, extra in (("a", ["--n", 6]), ("b", ["--n", 6]), ("c", ["--n", 3]), ("d", ["--n", 6, "--batch-size", 4])):
        run(["sample", "--model", tiny_model_path, "--sampler", "ddpm", "--steps", 50, "--seed", 7,
             "--context", "random", "--precision", precision, *extra, "--out", tmp_path / name])
    a, b, c, d = (np.load(tmp_path / k / "samples.npy") for k in "abcd")
    assert np.array_equal(a, b)
    assert np.array_equal(a[:3], c)
    assert np.array_equal(a, d)
    run(["sample", "--model", tiny_model_path, "--sampler", "ddpm", "--steps", 50, "--seed", 8, "--n", 6,
         "--precision", precision, "--out", tmp_path / "e"])
    assert not np.array_equal(a, np.load(tmp_path / "e" / "samples.npy"))


def test_python_api(tiny_model_path, tmp_path):
    model = spritediff.load(tiny_model_path)
    result = spritediff.sample(model, sampler="ddim", steps=10, n=4, context="hero=1,food=0.6", seed=3)
    assert result.images.shape == (4, 16, 16, 3) and result.nfe == 10 and result.seconds > 0
    assert len(result.frames) == 10 and result.timesteps == Schedule.course().timesteps(10)[:-1]
    assert result.grid().size == (4 * (4 * 17 + 1), 4 * 18)
    result.save_gif(tmp_path / "x.gif")
    assert Image.open(tmp_path / "x.gif").n_frames == 11


def test_context_specs():
    assert parse_context(None, CLASSES, 2) is None and parse_context("none", CLASSES, 2) is None
    assert parse_context("spell", CLASSES, 2).tolist() == [[0, 0, 0, 1, 0]] * 2
    assert parse_context("hero=1, food=0.6", CLASSES, 1).tolist() == [[1, 0, pytest.approx(0.6), 0, 0]]
    gens = lambda n: [torch.Generator().manual_seed(i) for i in range(n)]  # noqa: E731
    many, few = parse_context("random", CLASSES, 40, gens(40)), parse_context("random", CLASSES, 3, gens(3))
    assert torch.equal(many[:3], few) and many.sum(1).eq(1).all() and len(set(many.argmax(1).tolist())) > 2
    with pytest.raises(SpriteDiffError, match="unknown class 'dragon'"):
        parse_context("dragon", CLASSES, 1)


def test_guidance_is_one_batched_call_with_the_cfg_formula():
    calls = []
    torch.manual_seed(0)
    net = tiny_model().net

    class Spy(torch.nn.Module):
        n_cfeat = 5

        def forward(self, x, t, c):
            calls.append(len(x))
            return net(x, t, c)

    x, t, c = torch.randn(3, 3, 16, 16), torch.tensor([400, 200, 10]), torch.eye(5)[:3]
    guided = Denoiser(Spy(), Schedule.course(), c, guidance=2.0)(x, t)
    assert calls == [6]
    with torch.no_grad():
        cond, uncond = net(x, t / 500, c), net(x, t / 500, torch.zeros_like(c))
    torch.testing.assert_close(guided, 3 * cond - 2 * uncond, rtol=1e-5, atol=1e-5)


BAD_INPUTS = [
    (["--sampler", "euler-maruyama-x"], "unknown sampler"),
    (["--steps", "0"], "steps must be between 1 and T=500"),
    (["--steps", "501"], "steps must be between 1 and T=500"),
    (["--sampler", "ddim", "--eta", "-0.5"], "--eta must be between 0 and 1"),
    (["--sampler", "ddim", "--eta", "nan"], "--eta must be a finite number"),
    (["--context", "dragon"], "unknown class 'dragon'"),
    (["--guidance", "-1", "--context", "hero"], "argument --guidance: must be >= 0"),
    (["--n", "0"], "argument -n/--n: must be at least 1"),
    (["--sampler", "heun", "--eta", "0"], "heun takes no option eta"),
    (["--spacing", "cubic"], "unknown --spacing 'cubic'"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tiny_model_path, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run(["sample", "--model", tiny_model_path, *args, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_bad_model_files_and_unwritable_out_exit_2(tiny_model_path, tmp_path, capsys):
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(tiny_model_path.read_bytes()[:1000])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for args, message in (
        (["--model", tmp_path / "missing.safetensors", "--out", tmp_path / "o1"], "not found"),
        (["--model", truncated, "--out", tmp_path / "o2"], "truncated or corrupt"),
        (["--model", tiny_model_path, "--out", blocker], "not a folder"),
        (["--model", tiny_model_path, "--out", blocker / "sub"], "cannot write to --out"),
    ):
        assert run(["sample", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_a_failed_run_leaves_earlier_outputs_untouched(tiny_model_path, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(["sample", "--model", tiny_model_path, "--n", 2, "--steps", 2, "--out", out])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("spritediff.cli.write_json", broken)
    assert run(["sample", "--model", tiny_model_path, "--n", 2, "--steps", 3, "--seed", 1, "--out", out]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder, nothing replaced


def test_cli_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spritediff", "sample", "--model", str(tmp_path / "x.safetensors"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("spritediff: error:") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("args, sampler, steps", [([], "ddpm", 50), (["--steps", 7], "ddpm", 7),
                                                  (["--sampler", "ddim"], "ddim", 20),
                                                  (["--sampler", "ddpm"], "ddpm", 500)])
def test_sample_defaults_to_ddpm_50_and_named_samplers_keep_their_steps(tiny_model_path, tmp_path, args, sampler,
                                                                          steps):
    out = tmp_path / "out"
    assert run(["sample", "--model", tiny_model_path, "--n", 1, "--no-gif", *args, "--out", out]) == 0
    record = json.loads((out / "run.json").read_text())
    assert (record["sampler"], record["steps"], record["nfe"]) == (sampler, steps, steps)


def test_the_default_steps_fit_a_model_of_fewer_timesteps(tmp_path):
    model = tiny_model()
    model.schedule = Schedule.course(30)
    spritediff.save_model(model, tmp_path / "t30.safetensors")
    out = tmp_path / "out"
    assert run(["sample", "--model", tmp_path / "t30.safetensors", "--n", 1, "--no-gif", "--out", out]) == 0
    assert json.loads((out / "run.json").read_text())["steps"] == 30
