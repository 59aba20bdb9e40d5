"""The fast inference path: BatchNorm folding, channels-last and bf16 on the CPU; CUDA graphs where CUDA exists."""
import pytest
import torch
from conftest import tiny_model

import spritediff
from spritediff import fast as fast_module
from spritediff.denoiser import Denoiser
from spritediff.errors import SpriteDiffError
from spritediff.fast import (CudaGraphEps, check_precision, fold_batchnorm, graphed_or_eager, prepare_net,
                             resolve_precision)
from spritediff.models import ContextUnet


def trained_like_net(seed=0):
    """A ContextUnet whose BatchNorms carry non-trivial running statistics and affine weights."""
    torch.manual_seed(seed)
    net = ContextUnet(n_feat=16)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_folding_removes_every_batchnorm_and_keeps_the_output():
    net = trained_like_net()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x, t, c = torch.randn(5, 3, 16, 16), torch.rand(5), torch.eye(5)
    with torch.no_grad():
        expected, got = net(x, t, c), folded(x, t, c)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (checked by benchmarks/gpu_check.sh)")
def test_cuda_graph_replay_equals_eager():
    model = tiny_model()
    net = model.net.cuda()
    eps = Denoiser(net, model.schedule, torch.eye(5).cuda()[[0, 1, 2, 3]], guidance=1.0)
    x = torch.randn(4, 3, 16, 16, device="cuda")
    graphed = CudaGraphEps(eps, x)
    for t in (500, 250, 1):
        tt = torch.full((4,), t, device="cuda")
        torch.testing.assert_close(graphed(x, tt), eps(x, tt), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (checked by benchmarks/gpu_check.sh)")
def test_cuda_sample_with_a_cpu_context_and_guidance_matches_eager():
    model = tiny_model()
    context = torch.eye(5)[[0, 2, 4]]  # on the CPU: sample() moves it to the GPU before any capture
    runs = [spritediff.sample(model, "ddim", 10, n=3, seed=1, context=context, guidance=2.0, device="cuda",
                              frames=False, fast=fast, precision="fp32") for fast in (False, True)]
    assert abs(runs[0].images.astype(int) - runs[1].images.astype(int)).max() <= 1
    assert next(model.net.parameters()).device.type == "cpu"  # the caller's model stays where it was


def test_sample_fast_path_matches_eager_on_cpu(tiny_model_path):
    import spritediff

    model = spritediff.load(tiny_model_path)
    eager = spritediff.sample(model, "ddim", 10, n=3, seed=1, frames=False, fast=False, precision="fp32")
    fast = spritediff.sample(model, "ddim", 10, n=3, seed=1, frames=False, fast=True, precision="fp32")
    assert eager.nfe == fast.nfe == 10
    assert abs(eager.images.astype(int) - fast.images.astype(int)).max() <= 1


def test_fp32_is_bit_reproducible_run_to_run(tiny_model_path):
    model = spritediff.load(tiny_model_path)
    runs = [spritediff.sample(model, "ddpm", 20, n=3, seed=2, context="random", frames=False,
                              precision="fp32").images for _ in range(2)]
    assert (runs[0] == runs[1]).all()


def test_prepare_net_leaves_the_callers_net_alone():
    net = trained_like_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    prepared = prepare_net(net, torch.device("cpu"), fast=True)
    assert net.training and not prepared.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    conv = next(m for m in prepared.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous(
        memory_format=torch.channels_last)


def test_sample_does_not_change_the_callers_model(tiny_model_path):
    model = spritediff.load(tiny_model_path)
    model.net.train()
    spritediff.sample(model, "ddim", 3, n=2, frames=False)
    assert model.net.training


def test_bf16_runs_the_net_in_bf16_and_returns_fp32():
    net = trained_like_net()
    model = tiny_model()
    x, t = torch.randn(4, 3, 16, 16), torch.full((4,), 250)
    exact = Denoiser(net, model.schedule)(x, t)
    rounded = Denoiser(net, model.schedule, bf16=True)(x, t)
    assert rounded.dtype == torch.float32
    relative = float((rounded - exact).norm() / exact.norm())
    assert 1e-4 < relative < 3e-2  # bf16 keeps 8 bits of mantissa: visibly not fp32, and close to it


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(fast_module, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu"), rows=3) == "fp32"  # few rows: bf16's casts cost more
    assert resolve_precision("auto", torch.device("cpu"), rows=4) == expected
    assert resolve_precision("bf16", torch.device("cpu"), rows=1) == "bf16"  # asked for, given


def test_sample_resolves_auto_by_the_rows_of_a_call(tiny_model_path, monkeypatch):
    monkeypatch.setattr(fast_module, "cpu_has_native_bf16", lambda: True)
    model = spritediff.load(tiny_model_path)
    small = spritediff.sample(model, "ddim", 2, n=6, batch_size=3, frames=False)
    guided = spritediff.sample(model, "ddim", 2, n=6, batch_size=2, context="hero", guidance=1.0, frames=False)
    default = spritediff.sample(model, "ddim", 2, n=1, frames=False)  # the batch asked for (128), not n, decides
    assert [r.settings["precision"] for r in (small, guided, default)] == ["fp32", "bf16", "bf16"]


def test_precision_accepts_names_and_dtypes_and_nothing_else(tiny_model_path):
    assert check_precision(torch.bfloat16) == "bf16" and check_precision(torch.float32) == "fp32"
    for bad in ("fp16", torch.float16, None, 32):
        with pytest.raises(SpriteDiffError, match="unknown precision"):
            check_precision(bad)
    model = spritediff.load(tiny_model_path)
    result = spritediff.sample(model, "ddim", 2, n=1, frames=False, precision=torch.bfloat16)
    assert result.settings["precision"] == "bf16"


def test_a_failed_cuda_graph_capture_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_capture(eps_fn, example_x):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(fast_module, "CudaGraphEps", broken_capture)
    eps_fn = lambda x, t: x  # noqa: E731
    with pytest.warns(UserWarning, match="CUDA graph capture failed, sampling eagerly: operation not permitted"):
        assert graphed_or_eager(eps_fn, torch.zeros(1)) is eps_fn


def test_callback_sees_every_step_of_every_batch(tiny_model_path):
    model = spritediff.load(tiny_model_path)
    seen = []
    spritediff.sample(model, "ddim", 4, n=5, batch_size=2, frames=False,
                      callback=lambda info, first: seen.append((first, info.t, tuple(info.x_t.shape))))
    assert [s[0] for s in seen] == [0] * 4 + [2] * 4 + [4] * 4
    assert [s[2][0] for s in seen] == [2] * 8 + [1] * 4
    with pytest.raises(SpriteDiffError, match="callback must be callable"):
        spritediff.sample(model, "ddim", 4, n=1, callback=3)
