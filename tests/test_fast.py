"""The fast inference path: BatchNorm folding on any device; CUDA graph capture where CUDA exists."""
import pytest
import torch
from conftest import tiny_model

from spritediff.denoiser import Denoiser
from spritediff.fast import CudaGraphEps, fold_batchnorm
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


def test_sample_fast_path_matches_eager_on_cpu(tiny_model_path):
    import spritediff

    model = spritediff.load(tiny_model_path)
    eager = spritediff.sample(model, "ddim", 10, n=3, seed=1, frames=False, fast=False)
    fast = spritediff.sample(model, "ddim", 10, n=3, seed=1, frames=False, fast=True)
    assert eager.nfe == fast.nfe == 10
    assert abs(eager.images.astype(int) - fast.images.astype(int)).max() <= 1
