"""BatchNorm statistics measured on the net itself: exactly the batch statistics of the training distribution."""
import numpy as np
import torch

from spritediff.batchnorm import recalibrate, training_batch
from spritediff.models import ContextUnet
from spritediff.schedule import Schedule


def test_one_batch_sets_the_first_norm_to_that_batchs_statistics():
    torch.manual_seed(0)
    net = ContextUnet(n_feat=8)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (30, 16, 16, 3), dtype=np.uint8))
    labels = torch.eye(5)[torch.arange(30) % 5]
    ab = Schedule.course().alphas_cumprod.float()
    x_t, _, _ = training_batch(images, labels, ab, 500, 16, 0.1, 3, 0)
    h = net.init_conv.conv1[0](x_t).detach()  # what the first BatchNorm sees
    recalibrate(net, images, labels, ab, 500, batches=1, batch=16, seed=3)
    norm = net.init_conv.conv1[1]
    assert not net.training and norm.momentum == 0.1  # eval mode, momentum restored
    torch.testing.assert_close(norm.running_mean, h.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)


def test_the_result_depends_on_the_weights_and_draws_alone():
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8))
    ab = Schedule.course().alphas_cumprod.float()
    stats = []
    for corrupt in (False, True):
        torch.manual_seed(0)
        net = ContextUnet(n_feat=8)
        if corrupt:  # stale statistics from elsewhere are replaced, not blended in
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.fill_(5.0)
                    m.running_var.fill_(9.0)
        recalibrate(net, images, None, ab, 500, batches=3, batch=8)
        stats.append({k: v for k, v in net.state_dict().items() if "running" in k})
    for key in stats[0]:
        torch.testing.assert_close(stats[0][key], stats[1][key], rtol=0, atol=0)
