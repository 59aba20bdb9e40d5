"""`spritediff eval` end to end on a tiny random model: eval.json, the plot, the noise levels, bad input."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import fake_sprite_images, run

from spritediff.evaluate import real_halves
from spritediff.metrics import seed_reach


@pytest.fixture(scope="module")
def fake_sprites(tmp_path_factory):
    """64 random 16x16 sprites on a black background, plus their mirror images (128 rows)."""
    images = fake_sprite_images(64, seed=0)
    path = tmp_path_factory.mktemp("data") / "fake_sprites.npy"
    np.save(path, np.concatenate([images, images[:, :, ::-1]]))
    return path


def test_eval_writes_json_and_plot(tiny_model_path, fake_sprites, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run(["eval", "--model", tiny_model_path, "--data", fake_sprites, "--samplers", "ddim:2,ddim:4,ddpm:3",
                "--n", 12, "--context", "random", "--guidance", 1, "--out", out]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "fd_vs_nfe.png"]
    record = json.loads((out / "eval.json").read_text())
    rows = record["results"]
    assert [r["spec"] for r in rows] == ["ddim:2", "ddim:4", "ddpm:3"]
    assert [r["nfe"] for r in rows] == [2, 4, 3] and [r["family"] for r in rows] == ["ddim", "ddim", "ddpm"]
    for r in rows:
        assert r["fd"] > 0 and r["seconds"] > 0 and np.isfinite(r["kid"]) and r["kid_std"] >= 0
        assert 0 <= r["class_accuracy"] <= 1  # a context was used: the feature net's head scores the samples
        assert r["net_precision"] in ("fp32", "bf16")  # what sample() ran, not a guess made beside it
        assert len(r["c2st_splits"]) == 2 and r["c2st"] == pytest.approx(np.mean(r["c2st_splits"]), abs=1e-4)
        assert all(0 <= a <= 1 for a in r["c2st_splits"]) and 0 <= r["c2st_stderr"] < 0.5
    noise = record["noise"]
    assert noise["real_halves_sizes"] == [64, 64] and noise["fd_real_halves"] > 0
    assert noise["two_seeds"] == {"spec": "ddim:2", "seeds": [0, 1], "n": 12} and noise["fd_two_seeds"] > 0
    assert noise["fd_seed_reach"] == pytest.approx(seed_reach(noise["fd_two_seeds"], rows[0]["fd"]), abs=2e-4)
    assert record["n"] == 12 and record["reference_images"] == 128 and "ElvGames" in record["credit"]
    assert record["context"] == "random" and record["guidance"] == 1
    with Image.open(out / "fd_vs_nfe.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 400
    table = capsys.readouterr().out
    assert "ddim:4" in table and "class acc" in table and "real vs real" in table and "C2ST" in table


def test_no_two_sample_leaves_the_test_out(tiny_model_path, fake_sprites, tmp_path, capsys):
    assert run(["eval", "--model", tiny_model_path, "--data", fake_sprites, "--samplers", "ddim:2", "--n", 8,
                "--no-two-sample", "--out", tmp_path / "e"]) == 0
    row = json.loads((tmp_path / "e" / "eval.json").read_text())["results"][0]
    assert "c2st" not in row and "fd" in row and "C2ST" not in capsys.readouterr().out


def test_eval_is_reproducible_and_options_reach_the_sampler(tiny_model_path, fake_sprites, tmp_path):
    for name in ("a", "b"):
        assert run(["eval", "--model", tiny_model_path, "--data", fake_sprites, "--n", 8, "--out", tmp_path / name,
                    "--samplers", "ddim:3:eta=1,ddpm:3:variance=posterior", "--noise-sampler", "ddim:2"]) == 0
    a, b = (json.loads((tmp_path / k / "eval.json").read_text()) for k in "ab")
    strip = ("seconds", "seconds_total")
    for ra, rb in zip(a["results"], b["results"]):
        assert {k: v for k, v in ra.items() if k not in strip} == {k: v for k, v in rb.items() if k not in strip}
    assert a["noise"] == b["noise"]
    assert [r["family"] for r in a["results"]] == ["ddim eta=1", "ddpm variance=posterior"]
    assert a["results"][0]["options"] == {"eta": 1.0} and a["results"][0]["class_accuracy"] is None
    assert a["noise"]["two_seeds"]["spec"] == "ddim:2"
    # a --noise-sampler outside --samplers gets the seed bound from its own FD, as it would as a row
    assert run(["eval", "--model", tiny_model_path, "--data", fake_sprites, "--n", 8, "--out", tmp_path / "c",
                "--samplers", "ddim:2"]) == 0
    c = json.loads((tmp_path / "c" / "eval.json").read_text())
    assert a["noise"]["fd_seed_reach"] == pytest.approx(
        seed_reach(c["noise"]["fd_two_seeds"], c["results"][0]["fd"]), rel=1e-4)  # c's inputs rounded to 1e-4
    assert a["context"] == "none" and a["guidance"] is None  # no context: the guidance weight did nothing


@pytest.mark.parametrize("specs, message", [
    ("ddim:20:etaa=1", "no option 'etaa'"),
    ("nosuch:10", "unknown sampler 'nosuch'"),
    ("ddim:0", "between 1 and T=500"),
    ("ddim:ten", "not an integer"),
])
def test_bad_sampler_spec_exits_2_with_one_line(tiny_model_path, fake_sprites, tmp_path, capsys, specs, message):
    out = tmp_path / "eval"
    assert run(["eval", "--model", tiny_model_path, "--data", fake_sprites, "--samplers", specs, "--n", 4,
                "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spritediff: error:") and message in err
    assert not out.exists()  # nothing written, not even the folder


def test_missing_data_and_bad_context_exit_2(tiny_model_path, fake_sprites, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run(["eval", "--model", tiny_model_path, "--data", tmp_path / "none.npy", "--samplers", "ddim:2",
                "--out", out]) == 2
    assert "data file not found" in capsys.readouterr().err
    assert run(["eval", "--model", tiny_model_path, "--data", fake_sprites, "--samplers", "ddim:2",
                "--context", "dragon", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown class 'dragon'" in err
    assert not out.exists()


def test_real_halves_keep_mirror_pairs_together():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    real = np.concatenate([images, images[:, :, ::-1]])
    a, b = real_halves(real, seed=3)
    assert a.sum() == b.sum() == 30 and not (a & b).any()
    assert np.array_equal(a[:30], a[30:])


def test_context_data_follows_the_label_mix():
    import torch

    from spritediff.evaluate import label_rows
    from spritediff.engine import sample_generators

    labels = torch.eye(5)[[1] * 90 + [3] * 10]  # 90% non-hero, 10% spell
    rows = label_rows(labels, sample_generators(0, 2000, stream=1))
    share = rows.mean(0)
    assert rows.sum(1).eq(1).all() and abs(share[1] - 0.9) < 0.03 and abs(share[3] - 0.1) < 0.03
    assert torch.equal(rows[:7], label_rows(labels, sample_generators(0, 7, stream=1)))  # row i ignores n


def test_context_data_needs_labels(tiny_model_path, fake_sprites, tmp_path, capsys):
    assert run(["eval", "--model", tiny_model_path, "--data", fake_sprites, "--samplers", "ddim:2",
                "--context", "data", "--out", tmp_path / "e"]) == 2
    assert "give --labels" in capsys.readouterr().err


def _gaussian_fd(mu_a, cov_a, mu_b, cov_b) -> float:
    """Exact squared 2-Wasserstein distance of two Gaussians (what FD computes from fitted features)."""
    from scipy.linalg import sqrtm
    root = sqrtm(sqrtm(cov_a) @ cov_b @ sqrtm(cov_a)).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_seed_reach_bounds_how_far_fd_to_the_real_set_moves():
    rng = np.random.default_rng(0)
    tight = 0
    for _ in range(200):
        gaussians = []
        for _ in range(3):  # the real set, seed a's samples, seed b's samples
            m = rng.normal(size=(4, 4))
            gaussians.append((rng.normal(size=4), m @ m.T + 0.1 * np.eye(4)))
        real, a, b = gaussians
        fd_a, fd_b, between = _gaussian_fd(*a, *real), _gaussian_fd(*b, *real), _gaussian_fd(*a, *b)
        reach = seed_reach(between, fd_a)
        assert abs(fd_a - fd_b) <= reach + 1e-9
        tight += abs(fd_a - fd_b) > 0.5 * reach
    assert tight > 0  # the bound is met by some pairs, not vacuous
    # collinear means, equal covariances: the bound is attained exactly
    eye = np.eye(2)
    assert seed_reach(_gaussian_fd(np.zeros(2), eye, np.array([1.0, 0]), eye), 4.0) == pytest.approx(
        _gaussian_fd(np.array([3.0, 0]), eye, np.zeros(2), eye) - 4.0)
