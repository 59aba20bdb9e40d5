"""prediction_type (eps, x0, v): exact x0 and v nets built from the oracle sample as the eps net does, the type
travels in the model file, train --prediction trains the matching target, and bad values are one-line errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import small_data, tiny_model
from oracle import GaussianMixture
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import spritediff
from spritediff.checkpoint import METADATA_KEY, load_model, save_model
from spritediff.cli import main
from spritediff.denoiser import Denoiser, eps_from_output
from spritediff.errors import SpriteDiffError
from spritediff.samplers import SAMPLERS
from spritediff.schedule import Schedule
from spritediff.train import TrainConfig, diffusion_loss

SCHEDULE = Schedule.course()


class OracleNet(torch.nn.Module):
    """The oracle's exact eps, output as eps, x0 or v: forward(x (B,C,H,W), t/T (B,), c (B,1)) -> (B,C,H,W)."""

    n_cfeat = 1

    def __init__(self, mixture: GaussianMixture, prediction_type: str):
        super().__init__()
        self.mixture, self.prediction_type = mixture, prediction_type

    def forward(self, x: torch.Tensor, time: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ab = SCHEDULE.alphas_cumprod[(time.double() * SCHEDULE.T).round().long().cpu()]
        eps = self.mixture.eps_from_ab(x, ab)
        a, s = ab.sqrt().view(-1, 1, 1, 1).to(x.dtype), (1 - ab).sqrt().view(-1, 1, 1, 1).to(x.dtype)
        x0 = (x - s * eps) / a
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.prediction_type]


def oracle_samples(sampler: str, prediction_type: str, steps: int = 8) -> torch.Tensor:
    mixture = GaussianMixture.small()
    x_T = torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    denoiser = Denoiser(OracleNet(mixture, prediction_type), SCHEDULE, prediction_type=prediction_type)
    return SAMPLERS[sampler](denoiser, x_T, SCHEDULE, steps=steps, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "dpmpp-3m", "unipc", "euler", "heun", "plms", "ddpm"])
@pytest.mark.parametrize("prediction_type", ["x0", "v"])
def test_exact_x0_and_v_nets_sample_as_the_eps_net(sampler, prediction_type):
    """The nets' outputs pass through float32 (Denoiser casts them), so agreement is to float32 rounding."""
    reference = oracle_samples(sampler, "eps")
    torch.testing.assert_close(oracle_samples(sampler, prediction_type), reference, atol=2e-6, rtol=0)


def test_the_conversions_invert_the_definitions():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64), torch.randn(4, 3, 2, 2, generator=g,
                                                                                   dtype=torch.float64)
    ab = SCHEDULE.alphas_cumprod[torch.tensor([1, 10, 250, 500])].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    torch.testing.assert_close(eps_from_output(x0, x_t, ab, "x0"), eps, atol=1e-9, rtol=0)
    torch.testing.assert_close(eps_from_output(ab.sqrt() * eps - (1 - ab).sqrt() * x0, x_t, ab, "v"), eps,
                               atol=1e-12, rtol=0)
    clean = torch.ones(1, 1, 1, 1, dtype=torch.float64)  # t = 0: an x0 net says nothing about the noise
    assert torch.equal(eps_from_output(x0[:1], x0[:1], clean, "x0"), torch.zeros_like(x0[:1]))


class AffineNet(torch.nn.Module):
    """A context-dependent stand-in: out = x * (1 + c.sum) + 0.1 t (B,C,H,W)."""

    n_cfeat = 2

    def forward(self, x, time, c):
        return x * (1 + c.sum(1)).view(-1, 1, 1, 1) + 0.1 * time.view(-1, 1, 1, 1)


@pytest.mark.parametrize("prediction_type", ["x0", "v"])
def test_guidance_on_the_converted_eps_is_guidance_on_the_output(prediction_type):
    g = torch.Generator().manual_seed(1)
    x, t, w = torch.randn(3, 3, 4, 4, generator=g), torch.tensor([5, 200, 480]), 1.5
    context = torch.rand(3, 2, generator=g)
    net, ab = AffineNet(), SCHEDULE.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    guided = Denoiser(net, SCHEDULE, context, guidance=w, prediction_type=prediction_type)(x, t)
    eps_c = eps_from_output(net(x, t / SCHEDULE.T, context), x, ab, prediction_type)
    eps_0 = eps_from_output(net(x, t / SCHEDULE.T, torch.zeros_like(context)), x, ab, prediction_type)
    torch.testing.assert_close(guided, (1 + w) * eps_c - w * eps_0, atol=1e-4, rtol=1e-5)


def test_the_training_target_of_each_type():
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t, ab = torch.tensor([1, 400]), SCHEDULE.alphas_cumprod.float()
    a = ab[t].view(-1, 1, 1, 1)

    def zero_net(x_t, time, c):
        return torch.zeros_like(x_t)

    targets = {"eps": noise, "x0": x0, "v": a.sqrt() * noise - (1 - a).sqrt() * x0}
    for prediction, target in targets.items():
        loss = diffusion_loss(zero_net, x0, None, t, noise, ab, 500, "fp32", prediction)
        torch.testing.assert_close(loss, target.pow(2).mean())


def metadata(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[METADATA_KEY])


def rewrite(path, change) -> None:
    config = change(metadata(path))
    save_file(load_file(str(path)), str(path), metadata={METADATA_KEY: json.dumps(config)})


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_the_type_round_trips_through_the_model_file(tmp_path, prediction_type):
    model = tiny_model()
    model.prediction_type = prediction_type
    save_model(model, tmp_path / "m.safetensors")
    assert metadata(tmp_path / "m.safetensors")["prediction_type"] == prediction_type
    assert load_model(tmp_path / "m.safetensors").prediction_type == prediction_type


def test_files_without_the_field_are_eps_models(tmp_path):
    save_model(tiny_model(), tmp_path / "old.safetensors")
    rewrite(tmp_path / "old.safetensors", lambda c: {k: v for k, v in c.items() if k != "prediction_type"})
    assert "prediction_type" not in metadata(tmp_path / "old.safetensors")
    assert load_model(tmp_path / "old.safetensors").prediction_type == "eps"
    assert spritediff.load().prediction_type == "eps"  # the shipped default model
    torch.save(tiny_model().net.state_dict(), tmp_path / "course.pth")
    assert load_model(tmp_path / "course.pth").prediction_type == "eps"


@pytest.mark.parametrize("bad", ["w", "V", "", 5, None, ["v"]])
def test_a_bad_type_in_a_file_is_a_one_line_error(tmp_path, bad):
    save_model(tiny_model(), tmp_path / "bad.safetensors")
    rewrite(tmp_path / "bad.safetensors", lambda c: {**c, "prediction_type": bad})
    with pytest.raises(SpriteDiffError) as info:
        load_model(tmp_path / "bad.safetensors")
    message = str(info.value)
    assert "prediction_type must be one of eps, x0, v" in message and "\n" not in message


def test_bad_types_are_refused_everywhere(tmp_path, capsys):
    with pytest.raises(SpriteDiffError, match="prediction_type must be one of eps, x0, v, got 'w'"):
        Denoiser(AffineNet(), SCHEDULE, prediction_type="w")
    model = tiny_model()
    model.prediction_type = "noise"
    with pytest.raises(SpriteDiffError, match="prediction_type must be one of"):
        save_model(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(SpriteDiffError, match="bad --prediction: w"):
        TrainConfig(prediction="w").check()
    np.save(tmp_path / "x.npy", np.zeros((8, 16, 16, 3), np.uint8))
    assert main(["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "m.safetensors"),
                 "--prediction", "w"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--prediction" in err and "\n" not in err


def test_train_prediction_v_then_sample(tmp_path):
    x, y = small_data(tmp_path, n=16)
    out = tmp_path / "v.safetensors"
    assert main(["train", "--data", str(x), "--labels", str(y), "--out", str(out),
                 "--steps", "2", "--batch", "8", "--n-feat", "8", "--prediction", "v"]) == 0
    model = spritediff.load(out)
    assert model.prediction_type == "v" and model.info["config"]["prediction"] == "v"
    for sampler in ("ddim", "dpmpp-2m"):
        result = spritediff.sample(model, sampler, 3, n=2, context="class0", seed=0, frames=False)
        assert result.images.shape == (2, 16, 16, 3)
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    as_eps = SAMPLERS["ddim"](Denoiser(model.net, model.schedule), x_T, model.schedule, steps=3)
    as_v = SAMPLERS["ddim"](Denoiser(model.net, model.schedule, prediction_type="v"), x_T, model.schedule, steps=3)
    assert not torch.allclose(as_eps, as_v)  # the type changes what the same weights mean
    assert math.isfinite(float(as_v.abs().max()))


def test_a_run_saved_before_the_field_existed_resumes(tmp_path):
    from spritediff.data import load_data
    from spritediff.train import run_training, state_path

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    data, out = load_data(tmp_path / "x.npy"), tmp_path / "m.safetensors"
    run_training(TrainConfig(steps=2, batch=8, n_feat=8), data, out, torch.device("cpu"), 1, progress=False)
    state = torch.load(state_path(out), weights_only=True)
    del state["config"]["prediction"]
    torch.save(state, state_path(out))
    model = run_training(TrainConfig(steps=3, batch=8, n_feat=8), data, out, torch.device("cpu"), 1, resume=True,
                         progress=False)
    assert model.prediction_type == "eps"
    with pytest.raises(SpriteDiffError, match="other settings"):
        run_training(TrainConfig(steps=4, batch=8, n_feat=8, prediction="v"), data, out, torch.device("cpu"), 1,
                     resume=True, progress=False)
