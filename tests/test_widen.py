"""spritediff.models.widen: a wider net that computes what the narrow one does, and does not stay a copy."""
import pytest
import torch

from spritediff.models import ContextUnet
from spritediff.models.widen import widen


def random_net(n_feat: int = 16, seed: int = 0, **kwargs) -> ContextUnet:
    """A ContextUnet with random weights and random BatchNorm statistics (fresh ones would hide a wrong copy)."""
    torch.manual_seed(seed)
    net = ContextUnet(n_feat=n_feat, **kwargs)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_()
    return net


def inputs(batch: int = 6, channels: int = 3, n_cfeat: int = 5, height: int = 16):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, channels, height, height, generator=g), torch.rand(batch, generator=g),
            torch.rand(batch, n_cfeat, generator=g))


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_wide_net_computes_what_the_narrow_one_does(factor, mode):
    net = random_net()
    net.train(mode == "train")
    wide = widen(net, factor, torch.Generator().manual_seed(2))
    assert wide.n_feat == 16 * factor and wide.training == net.training
    x, t, c = inputs()
    with torch.no_grad():
        expected, got = net(x, t, c), wide(x, t, c)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert sum(p.numel() for p in wide.parameters()) > factor * sum(p.numel() for p in net.parameters())


def test_rgba_and_other_sizes_widen_too():
    net = random_net(n_feat=8, in_channels=4, n_cfeat=3, height=8).eval()
    wide = widen(net, 2)
    x, t, c = inputs(channels=4, n_cfeat=3, height=8)
    with torch.no_grad():
        assert torch.allclose(wide(x, t, c), net(x, t, c), atol=1e-4, rtol=1e-4)
        assert torch.allclose(wide(x, t, None), net(x, t, None), atol=1e-4, rtol=1e-4)


def test_a_net_without_classes_widens_too():
    """n_cfeat 0: the context embedding's first Linear has an empty (emb, 0) weight, a learned constant after it."""
    net = random_net(n_cfeat=0).eval()
    x, t, _ = inputs()
    with torch.no_grad():
        assert torch.allclose(widen(net, 2)(x, t, None), net(x, t, None), atol=1e-4, rtol=1e-4)


def test_a_groupnorm_net_widens_to_a_groupnorm_net_of_the_same_function():
    """--norm group: every conv block's GroupNorm of 8 groups over k C channels spans the copies of its narrow
    group's channels, so its statistics, and the output, are the narrow net's."""
    net = random_net(n_feat=16, norm="group").train()
    wide = widen(net, 2, torch.Generator().manual_seed(3))
    assert wide.config() == {**net.config(), "n_feat": 32} and wide.config()["norm"] == "group"
    x, t, c = inputs()
    with torch.no_grad():
        assert torch.allclose(wide(x, t, c), net(x, t, c), atol=1e-4, rtol=1e-4)


def test_factor_one_is_an_equal_copy():
    net = random_net()
    copy = widen(net, 1)
    assert copy is not net
    for (key, a), b in zip(net.state_dict().items(), copy.state_dict().values()):
        assert torch.equal(a, b), key


def test_copies_part_under_training():
    """After one optimizer step the two copies of a channel have different incoming weights: the random split
    gave them different gradients. Without it they would stay copies and the wide net would be the narrow one."""
    wide = widen(random_net(), 2, torch.Generator().manual_seed(3)).train()
    conv = wide.down1.model[0].conv2[0]  # input and output channels both widened
    before = conv.weight.detach().clone()
    assert torch.equal(before[0], before[1]) is False  # the split already differs along inputs
    optimizer = torch.optim.SGD(wide.parameters(), lr=0.1)
    x, t, c = inputs()
    wide(x, t, c).pow(2).mean().backward()
    optimizer.step()
    first = wide.init_conv.conv1[0].weight.detach()  # (2 n_feat, 3, 3, 3): rows 0 and 1 are copies at the start
    assert not torch.allclose(first[0], first[1])


def test_rejects_a_factor_below_one():
    with pytest.raises(ValueError, match="positive"):
        widen(random_net(), 0)
