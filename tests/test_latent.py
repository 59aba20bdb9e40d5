"""DDIM's latent space (spritediff.latent): inversion, slerp, SDEdit and inpainting on the exact Gaussian-mixture
oracle, the API and CLI on a tiny random model, bad input, and the exact method on real sprites."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import run, tiny_model
from oracle import GaussianMixture
from PIL import Image

import spritediff
from spritediff.latent import (inpaint_ddim, invert_bdia, invert_ddim, lerp, noise_to, sample_bdia, slerp,
                               truncated_schedule)
from spritediff.samplers import SAMPLERS
from spritediff.schedule import Schedule

SCHED = Schedule.course()


@pytest.fixture(scope="module")
def oracle():
    """The mixture, its eps function and 32 float64 starting noises x_T (32,1,2,2)."""
    mixture = GaussianMixture.small()
    x_T = torch.randn(32, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return mixture, mixture.eps_fn(SCHED), x_T


def log_log_slope(steps, errors) -> float:
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def test_ddim_inversion_of_a_ddim_sample_returns_x_T_at_first_order(oracle):
    _, eps, x_T = oracle
    steps = [25, 50, 100, 200]
    errors = []
    for S in steps:
        x0 = SAMPLERS["ddim"](eps, x_T, SCHED, steps=S)
        errors.append(float((invert_ddim(eps, x0, SCHED, steps=S) - x_T).abs().max()))
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert -1.2 < log_log_slope(steps, errors) < -0.8


def last_state(eps, x_T, S):
    """A BDIA sample from x_T and its state at t_{S-1} (where the last model call was made)."""
    seen = []
    x0 = sample_bdia(eps, x_T, SCHED, S, callback=lambda info: seen.append(info.x_t))
    return x0, seen[-1]


@pytest.mark.parametrize("S", [1, 2, 10, 100, 500])
def test_exact_inversion_returns_x_T_to_float_precision(oracle, S):
    _, eps, x_T = oracle
    x0, x_near = last_state(eps, x_T, S)
    back, back_t1 = invert_bdia(eps, x0, SCHED, S, x_near=x_near)
    assert float((back - x_T).abs().max()) < 1e-10
    x_t1 = SAMPLERS["ddim"](eps, x_T, truncated_schedule(SCHED, SCHED.T), steps=1) if S == 1 else None
    if x_t1 is not None:
        assert torch.allclose(back_t1, x0)  # one step: the pair is (x_T, x_0)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_exact_method_reconstructs_data_at_any_step_count(oracle, dtype, tolerance):
    mixture, eps, _ = oracle
    x0, _ = mixture.sample(32, torch.Generator().manual_seed(1))
    x0 = x0.to(dtype)
    for S in (3, 10, 50, 500):
        z, z1 = invert_bdia(eps, x0, SCHED, S)
        assert float(((sample_bdia(eps, z, SCHED, S, x_t1=z1) - x0) / 2).pow(2).mean()) < tolerance**2 * 1e2
        assert float((sample_bdia(eps, z, SCHED, S, x_t1=z1) - x0).abs().max()) < tolerance


@pytest.mark.parametrize("S", [20, 80])
def test_bdia_decoding_from_noise_tracks_the_ode_closer_than_ddim(oracle, S):
    mixture, eps, x_T = oracle
    exact = mixture.ode_solution(x_T[:8], SCHED.alpha_bar(SCHED.T))
    ddim = SAMPLERS["ddim"](eps, x_T[:8], SCHED, steps=S)
    bdia = sample_bdia(eps, x_T[:8], SCHED, S)
    assert float((bdia - exact).abs().max()) < float((ddim - exact).abs().max())


def test_ddim_round_trip_error_falls_with_steps(oracle):
    mixture, eps, _ = oracle
    x0, _ = mixture.sample(32, torch.Generator().manual_seed(2))
    errors = [float((SAMPLERS["ddim"](eps, invert_ddim(eps, x0, SCHED, S), SCHED, steps=S) - x0).pow(2).mean())
              for S in (10, 50, 250)]
    assert errors[0] > errors[1] > errors[2]


def test_slerp_keeps_the_norm_and_lerp_does_not():
    g = torch.Generator().manual_seed(3)
    z0, z1 = torch.randn(1, 3, 16, 16, generator=g), torch.randn(1, 3, 16, 16, generator=g)
    d = z0.numel()
    alphas = torch.linspace(0, 1, 9)
    path = slerp(z0.expand(9, -1, -1, -1), z1.expand(9, -1, -1, -1), alphas)
    assert torch.allclose(path[0], z0[0], atol=1e-6) and torch.allclose(path[-1], z1[0], atol=1e-6)
    norms = path.flatten(1).norm(dim=1) / math.sqrt(d)
    assert float((norms - 1).abs().max()) < 0.08
    middle = lerp(z0, z1, 0.5).norm() / math.sqrt(d)
    assert abs(float(middle) - math.sqrt(0.5)) < 0.08  # lerp's midpoint shrinks to ~ sqrt(d / 2)


def test_slerp_of_parallel_latents_falls_back_to_lerp():
    z = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(slerp(z, 2 * z, torch.tensor([0.5, 0.5])), 1.5 * z)


def test_sdedit_ends_input_at_strength_0_and_plain_sampling_at_strength_1(oracle):
    _, eps, x_T = oracle
    x = torch.rand_like(x_T)
    assert torch.equal(noise_to(x, x_T, SCHED, 0), x)
    start = noise_to(x, x_T, SCHED, SCHED.T)
    assert torch.equal(start, x_T)
    assert torch.equal(SAMPLERS["ddim"](eps, start, truncated_schedule(SCHED, SCHED.T), steps=20),
                       SAMPLERS["ddim"](eps, x_T, SCHED, steps=20))


def test_inpainting_keeps_the_known_pixels_exactly(oracle):
    mixture, eps, x_T = oracle
    known, _ = mixture.sample(32, torch.Generator().manual_seed(5))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    out = inpaint_ddim(eps, x_T, SCHED, 20, known, mask, generator=torch.Generator().manual_seed(6))
    assert torch.equal(out[:, :, mask[0, 0] == 0], known[:, :, mask[0, 0] == 0])
    assert not torch.equal(out[:, :, mask[0, 0] == 1], known[:, :, mask[0, 0] == 1])


def test_repaint_resampling_brings_the_fill_closer_to_the_exact_conditional():
    """Known: the bottom row of component 2's mean; the exact p(top row | bottom row) is almost all component 2."""
    mixture = GaussianMixture.small(std=0.2)
    means = mixture.means.view(3, 4)
    n = 1000
    known = means[2].view(1, 1, 2, 2).expand(n, 1, 2, 2).contiguous()
    hole = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64).view(1, 1, 2, 2)
    log_post = mixture.weights.log() - ((means[2, 2:] - means[:, 2:]) ** 2).sum(1) / (2 * 0.2**2)
    assert torch.softmax(log_post, 0)[2] > 0.999
    share = []
    for resample in (1, 5):
        g = torch.Generator().manual_seed(7)
        x_T = torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=g)
        out = inpaint_ddim(mixture.eps_fn(SCHED), x_T, SCHED, 20, known, hole, generator=g, resample=resample)
        nearest = ((out.view(n, 4)[:, None, :2] - means[None, :, :2]) ** 2).sum(-1).argmin(1)
        share.append(float((nearest == 2).double().mean()))
    assert share[1] > share[0] + 0.1 and share[1] > 0.95


# ---- API and CLI on a tiny random model ----

@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def sprites(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_api_invert_exact_and_ddim(tiny):
    images = sprites(3)
    exact = spritediff.invert(tiny, images, steps=10, method="exact", context="hero")
    assert exact.latents.shape == exact.latents_t1.shape == (3, 3, 16, 16)
    assert exact.nfe == 19  # S calls to encode, S - 1 to decode from the pair
    assert exact.errors.max() < 1e-10 and np.array_equal(exact.images, images)
    ddim = spritediff.invert(tiny, images, steps=10, method="ddim", frames=True)
    assert ddim.latents_t1 is None and ddim.errors.shape == (3,) and ddim.nfe == 20
    assert len(ddim.frames) == 10 and ddim.grid().size == (4 * (6 * 17 + 1), 4 * 18)


def test_api_edit_ends(tiny):
    image = sprites(1)[0]
    same = spritediff.edit(tiny, image, strength=0.0, n=2)
    assert np.array_equal(same.images, np.stack([image, image])) and same.nfe == 0
    fresh = spritediff.edit(tiny, image, strength=1.0, context="hero", n=2, seed=3, steps=10)
    plain = spritediff.sample(tiny, "ddim", steps=10, n=2, context="hero", seed=3, precision="fp32")
    assert np.array_equal(fresh.images, plain.images) and fresh.nfe == 10


def test_latent_tools_leave_the_callers_net_as_it_was():
    model = tiny_model()
    model.net.train()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    image = sprites(1)[0]
    spritediff.invert(model, sprites(2), steps=4)
    spritediff.invert(model, sprites(2), steps=4, method="exact", dtype=torch.float64)
    spritediff.edit(model, image, strength=0.5, n=2, steps=4)
    spritediff.interpolate(model, seeds=(1, 2), frames=3, steps=4)
    assert model.net.training
    after = model.net.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)
    assert after["out.3.weight"].is_contiguous()  # not left channels-last


def test_api_inpainting_keeps_pixels_outside_the_mask(tiny):
    image = sprites(1)[0]
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 2:9] = 1
    for strength in (1.0, 0.5):
        result = spritediff.edit(tiny, image, strength=strength, mask=mask, n=3, steps=10)
        kept = image[mask == 0]
        assert np.array_equal(result.images[:, mask == 0], np.broadcast_to(kept, (3, *kept.shape)))
        assert result.grid().size[0] == 4 * (5 * 17 + 1)  # input, holed input, 3 results


def test_api_interpolate_seeds_starts_at_the_samples(tiny):
    result = spritediff.interpolate(tiny, seeds=(5, 6), frames=5, steps=10, context=("hero", "food"))
    exact = {"precision": "fp32"}  # the latent tools run sample's fast path in fp32
    first = spritediff.sample(tiny, "ddim", steps=10, n=1, context="hero", seed=5, **exact).images[0]
    last = spritediff.sample(tiny, "ddim", steps=10, n=1, context="food", seed=6, **exact).images[0]
    assert np.abs(result.images[0].astype(int) - first).max() <= 1  # batched convs may round differently
    assert np.abs(result.images[-1].astype(int) - last).max() <= 1
    assert result.images.shape == (5, 16, 16, 3) and np.allclose(result.alphas, np.linspace(0, 1, 5))
    assert np.all(np.abs(result.norms / math.sqrt(768) - 1) < 0.1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent_inputs")
    images = sprites(4, seed=1)
    for i, image in enumerate(images[:2]):
        Image.fromarray(image).save(root / f"s{i}.png")
    np.save(root / "four.npy", images)
    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(mask[:8, :8]).save(root / "small_mask.png")
    Image.fromarray(images[0]).convert("L").save(root / "grey.png")
    Image.fromarray(images[0]).convert("RGBA").save(root / "rgba.png")
    Image.fromarray(images[0][:8, :8]).save(root / "small.png")
    np.save(root / "floats.npy", images.astype(np.float32))
    np.save(root / "labels.npy", np.eye(5)[[0, 1, 2, 3]])
    return root


def test_cli_invert_writes_latents_reconstructions_grid_record(tiny_model_path, files, tmp_path):
    out = tmp_path / "inv"
    assert run(["invert", files / "four.npy", "--labels", files / "labels.npy", "--model", tiny_model_path,
                "--steps", 5, "--method", "exact", "--out", out]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "latents.npy", "latents_t1.npy",
                                                     "reconstructions.npy", "run.json"]
    latents, recon = np.load(out / "latents.npy"), np.load(out / "reconstructions.npy")
    assert latents.shape == (4, 3, 16, 16) and latents.dtype == np.float32
    assert recon.dtype == np.uint8 and np.array_equal(recon, np.load(files / "four.npy"))
    record = json.loads((out / "run.json").read_text())
    assert record["method"] == "exact" and record["steps"] == 5 and record["context"] == "auto"
    assert len(record["errors"]) == 4 and record["mse_max"] < 1e-10
    assert "credit" not in record  # the tiny model was not trained on the course's sprites


def test_cli_interpolate_and_edit(tiny_model_path, files, tmp_path):
    assert run(["interpolate", "--images", files / "s0.png", files / "s1.png", "--frames", 4, "--steps", 5,
                "--model", tiny_model_path, "--out", tmp_path / "i"]) == 0
    assert Image.open(tmp_path / "i" / "interpolation.gif").n_frames == 6  # forth and back: 4 + 2
    assert np.load(tmp_path / "i" / "frames.npy").shape == (4, 16, 16, 3)
    record = json.loads((tmp_path / "i" / "run.json").read_text())
    parts = record["seconds_parts"]
    assert sorted(parts) == ["decode", "invert", "load_model", "write"] and parts["invert"] > 0  # what one waits for
    assert sum(parts.values()) <= record["seconds"] + 0.005 and min(parts.values()) >= 0
    assert run(["edit", files / "s0.png", "--mask", files / "mask.png", "--n", 2, "--steps", 5,
                "--model", tiny_model_path, "--out", tmp_path / "e"]) == 0
    edits = np.load(tmp_path / "e" / "edits.npy")
    assert np.array_equal(edits[:, 8:], np.stack([np.asarray(Image.open(files / "s0.png"))[8:]] * 2))
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["edit.gif", "edits.npy", "grid.png", "run.json"]


BAD = [
    (["invert", "{f}/small.png"], "the model's are 16x16"),
    (["invert", "{f}/grey.png"], "grey-scale"),
    (["invert", "{f}/rgba.png"], "transparency"),
    (["invert", "{f}/floats.npy"], "uint8"),
    (["invert", "{f}/s0.png", "--steps", "0"], "--steps"),
    (["invert", "{f}/s0.png", "--method", "edict"], "--method"),
    (["invert", "{f}/four.npy", "--labels", "{f}/mask.png"], "--labels"),
    (["edit", "{f}/s0.png", "--strength", "1.5"], "--strength"),
    (["edit", "{f}/s0.png", "--strength", "-0.1"], "--strength"),
    (["edit", "{f}/s0.png", "--mask", "{f}/small_mask.png"], "--mask"),
    (["edit", "{f}/rgba.png"], "transparency"),
    (["edit", "{f}/s0.png", "--context", "dragon"], "dragon"),
    (["edit", "{f}/s0.png", "--resample", "3"], "--resample"),
    (["interpolate", "--images", "{f}/s0.png"], "two images"),
    (["interpolate", "--images", "{f}/s0.png", "{f}/s1.png", "{f}/grey.png"], "grey-scale"),
    (["interpolate", "--images", "{f}/four.npy"], "two images"),
    (["interpolate", "--seeds", "1"], "two seeds"),
    (["interpolate", "--seeds", "1", "2", "--frames", "1"], "--frames"),
    (["interpolate", "--seeds", "1", "-2"], "--seeds"),
    (["interpolate", "--seeds", "1", "2", "--guidance", "nan"], "--guidance"),
    (["interpolate", "--seeds", "1", "2", "--context", "random"], "draws a class per sample"),
    (["interpolate", "--seeds", "1", "2", "--context", "hero", "mix"], "draws a class per sample"),
    (["edit", "{f}/s0.png", "--seed", "-3"], "--seed"),
    (["edit", "{f}/s0.png", "--guidance", "inf"], "--guidance"),
    (["invert", "{f}/s0.png", "--guidance", "nan"], "--guidance"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a[:3]).replace("{f}/", "") for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tiny_model_path, files, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    argv = [a.format(f=files) for a in args] + ["--model", str(tiny_model_path), "--out", str(out)]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spritediff: error:") and message in err
    assert not out.exists()


def test_exact_method_on_real_sprites_with_the_default_model(sprites_dir):
    images = np.load(sprites_dir / "sprites_base1788_16x16.npy")[::300]
    labels = np.load(sprites_dir / "sprite_labels_base1788.npy")[::300]
    result = spritediff.invert(spritediff.load(), images, steps=10, method="exact", labels=labels)
    assert result.errors.max() <= 1e-5  # the fp32 goal; fp64 is checked by benchmarks/latent_table.py
