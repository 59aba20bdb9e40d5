"""Training the sprite feature net: tell each sprite from every other, and name its class.

The contrastive part (NT-Xent, Chen et al. 2020) pulls two views of one sprite together and pushes
other sprites away. Its views differ only by a mirror flip and a one-pixel shift: colour, noise and
blur are never augmented, so the features stay sensitive to exactly what a poor sample gets wrong.
The class part (cross-entropy on the embedding) keeps the class readable for the class accuracy.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..sprites import CREDIT
from .config import FeatureTrainConfig
from .files import FeatureModel, to_float
from .net import SpriteFeatureNet
from .split import NEAR_DUPLICATE_RMS, held_out_split, sprite_groups


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B,C,H,W) in [-1,1] -> a random mirror flip per image and one shift of up to 1 px for the batch
    (the background, black, fills in)."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    height, width = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + height, dx:dx + width]


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of two views (B,D) each: view i of one must pick view i of the other among 2B - 1."""
    z = F.normalize(torch.cat((z1, z2)), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(z1)
    partner = torch.cat((torch.arange(n, 2 * n), torch.arange(n)))
    return F.cross_entropy(similarity, partner)


def train_feature_net(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                      config: FeatureTrainConfig = FeatureTrainConfig(), progress: bool = False,
                      dtype: torch.dtype = torch.float32) -> FeatureModel:
    """Train on the rows outside the held-out groups; report accuracy on the held-out rows.

    images: (N,H,H,C) uint8; labels: (N,K) one-hot (or soft: argmax is the class).
    dtype: the precision the weights will be stored in; they are rounded to it before the feature
    statistics and accuracies are measured, so these hold for the stored net exactly.
    Deterministic given config.seed: weights, order, views and split all come from it, and training
    runs on one thread (the thread count changes how float sums round). The global RNG and thread
    count are left as they were.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(images, labels, classes, config, progress, dtype)
    finally:
        torch.set_num_threads(threads)


def _train(images, labels, classes, config, progress, dtype) -> FeatureModel:
    targets = labels.argmax(1)
    groups = sprite_groups(images)
    held = held_out_split(groups, targets, config.held_out, config.seed)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = SpriteFeatureNet(len(classes), config.width, config.n_features, images.shape[1], images.shape[3])
    train_rows = torch.from_numpy(np.nonzero(~held)[0])
    _fit(net, to_float(images), torch.from_numpy(targets).long(), train_rows, config, progress)
    net.eval()
    round_to(net, dtype)
    net.standardize(to_float(images[train_rows.numpy()]))
    round_to(net, dtype)
    model = FeatureModel(net, tuple(classes), {})
    model.info = {**accuracy_report(model, images, targets, groups, held, config.held_out),
                  "config": asdict(config), "wall_seconds": round(time.perf_counter() - start, 1),
                  "machine": f"{platform.machine()} CPU, 1 thread", "torch": torch.__version__, "credit": CREDIT}
    return model


def _fit(net: SpriteFeatureNet, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
         config: FeatureTrainConfig, progress: bool) -> None:
    """AdamW, learning rate decayed linearly to 0; each step: two views, contrastive + class loss."""
    generator = torch.Generator().manual_seed(config.seed)
    batches = [b for b in range(0, len(rows), config.batch) if len(rows) - b >= 2]
    total = config.epochs * len(batches)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total)
    bar = tqdm(total=total, disable=not progress or None, unit="step", leave=False)
    net.train()
    for _ in range(config.epochs):
        order = rows[torch.randperm(len(rows), generator=generator)]
        for lo in batches:
            batch = order[lo:lo + config.batch]
            views = [net.embed(augment(x[batch], generator)) for _ in range(2)]
            loss = contrastive_loss(*(net.projection(v) for v in views), config.temperature)
            loss = loss + sum(F.cross_entropy(net.head(v), y[batch]) for v in views) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()


def accuracy_report(model: FeatureModel, images: np.ndarray, targets: np.ndarray, groups: np.ndarray,
                    held: np.ndarray, fraction: float) -> dict:
    """Class accuracy on the held-out and the training rows."""
    correct = model.predict(images) == targets
    predicted = model.predict(images[held])
    return {
        "held_out": {"accuracy": round(float(correct[held].mean()), 4),
                     "balanced_accuracy": round(balanced_accuracy(predicted, targets[held], model.net.n_classes), 4),
                     "rows": int(held.sum()), "groups": int(len(np.unique(groups[held]))),
                     "split": f"by sprite: mirror images and duplicates (rms <= {NEAR_DUPLICATE_RMS} levels) "
                              f"stay on one side; {fraction:.0%} of each class's groups held out"},
        "train": {"accuracy": round(float(correct[~held].mean()), 4), "rows": int((~held).sum()),
                  "groups": int(len(np.unique(groups[~held])))},
    }


def round_to(net: torch.nn.Module, dtype: torch.dtype) -> None:
    """Round the float weights and buffers of net to dtype's precision (keeping their own dtype)."""
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))


def balanced_accuracy(predicted: np.ndarray, targets: np.ndarray, n_classes: int) -> float:
    """Mean over the classes present in targets of the fraction of that class predicted right."""
    present = [c for c in range(n_classes) if (targets == c).any()]
    return float(np.mean([(predicted[targets == c] == c).mean() for c in present]))
