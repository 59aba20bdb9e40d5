"""The sprite feature net: a small CNN trained on the 5 sprite classes, whose feature layer FD/KID compare.

Inception features, the usual choice for FID, know nothing of 16x16 pixel art; this net is trained by
`spritediff train-features` on the sprites themselves and ships as assets/sprite_features.safetensors.
Its held-out accuracy is measured on a split by sprite: mirror images, duplicates and near-duplicates
(the course's JPEG-rebuilt copies) of a sprite always stay on one side.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import CREDIT, METADATA_KEY, write_atomically
from .errors import SpriteDiffError

FORMAT = "spritediff-features/1"
DEFAULT_FEATURES = Path(__file__).parent / "assets" / "sprite_features.safetensors"
NEAR_DUPLICATE_RMS = 8.0  # pixel levels (0..255): the JPEG-rebuilt mirror pairs differ by up to ~6.6


class SpriteFeatureNet(nn.Module):
    """(B,C,H,H) float in [-1,1] -> features (B,n_features) -> class logits (B,n_classes).

    Three stages of two 3x3 conv + ReLU at H, H/2 and H/4 (width, 2 width, 4 width channels),
    then a linear map of the (4 width, H/4, H/4) map to the embedding; the head is ReLU + linear.
    The features FD/KID compare are the embedding standardised per dimension by the training
    images' mean and standard deviation (buffers set after training), so that FD is in units of the
    real sprites' own spread (the real set's covariance has trace n_features) and KID's polynomial
    kernel sees values of order 1.
    """

    def __init__(self, n_classes: int = 5, width: int = 24, n_features: int = 64, height: int = 16,
                 in_channels: int = 3):
        super().__init__()
        if height % 4:
            raise ValueError(f"height must be a multiple of 4, got {height}")
        self.n_classes, self.width, self.n_features = n_classes, width, n_features
        self.height, self.in_channels = height, in_channels
        stages, channels = [], in_channels
        for i, out in enumerate((width, 2 * width, 4 * width)):
            stages += [nn.MaxPool2d(2)] if i else []
            stages += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.ReLU()]
            channels = out
        self.convs = nn.Sequential(*stages)
        self.to_features = nn.Linear(channels * (height // 4) ** 2, n_features)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(n_features, n_classes))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))

    def config(self) -> dict:
        return {"arch": "SpriteFeatureNet", "n_classes": self.n_classes, "width": self.width,
                "n_features": self.n_features, "height": self.height, "in_channels": self.in_channels}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,H) float in [-1,1] -> (B,n_features), the layer before the classifier head."""
        return self.to_features(self.convs(x).flatten(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,H) float in [-1,1] -> (B,n_features) standardised embedding, what FD and KID compare."""
        return (self.embed(x) - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,H) float in [-1,1] -> (B,n_classes) logits."""
        return self.head(self.embed(x))

    @torch.no_grad()
    def standardize(self, x: torch.Tensor) -> None:
        """Set the feature mean and standard deviation from images x (B,C,H,H) float in [-1,1]."""
        embedding = torch.cat([self.embed(chunk) for chunk in x.split(1024)])
        self.feature_mean.copy_(embedding.mean(0))
        self.feature_std.copy_(embedding.std(0).clamp_min(1e-6))


@dataclass
class FeatureModel:
    """A trained feature net with its class names and how it was made (command, seed, accuracy, credit)."""

    net: SpriteFeatureNet
    classes: tuple[str, ...]
    info: dict
    path: str | None = None

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """(N,H,W,3) uint8 images -> (N,n_features) float64 features (on the CPU)."""
        return torch.cat([self.net.features(to_float(chunk)).double().cpu()
                          for chunk in _chunks(images, batch)])

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor, batch: int = 1024) -> np.ndarray:
        """(N,H,W,3) uint8 images -> (N,) int64 predicted class indices."""
        return torch.cat([self.net(to_float(chunk)).argmax(1).cpu() for chunk in _chunks(images, batch)]).numpy()


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,H,W,C) uint8 -> (N,C,H,W) float32 in [-1,1]."""
    images = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _chunks(images, batch: int):
    return (images[lo:lo + batch] for lo in range(0, len(images), batch))


# ---------------------------------------------------------------------------------------------------
# The split by sprite


def sprite_groups(images: np.ndarray, tolerance: float = NEAR_DUPLICATE_RMS) -> np.ndarray:
    """(N,H,W,C) uint8 -> (N,) int64 group ids: one id for a sprite, its mirror images and its duplicates.

    Two images share a group when their root-mean-square pixel difference, as they are or with one of
    them mirrored left-right, is at most `tolerance` levels (connected components of that relation).
    """
    n = len(images)
    flat = images.reshape(n, -1).astype(np.float32)
    mirrored = images[:, :, ::-1].reshape(n, -1).astype(np.float32)
    limit = tolerance ** 2 * flat.shape[1]  # on the sum of squared differences
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    norms, mirror_norms = (flat ** 2).sum(1), (mirrored ** 2).sum(1)
    for lo in range(0, n, 512):
        rows = flat[lo:lo + 512]
        for other, other_norms in ((flat, norms), (mirrored, mirror_norms)):
            sq = norms[lo:lo + 512, None] + other_norms[None] - 2 * rows @ other.T
            for i, j in zip(*np.nonzero(sq <= limit)):
                a, b = root(lo + int(i)), root(int(j))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = np.array([root(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def held_out_split(groups: np.ndarray, labels: np.ndarray, fraction: float = 0.2,
                   seed: int = 0) -> np.ndarray:
    """(N,) bool mask of held-out rows: about `fraction` of the groups of each class, whole groups only.

    groups: (N,) group ids (sprite_groups); labels: (N,) class indices (a group takes its first row's).
    """
    rng = np.random.default_rng([seed, 7])
    ids, first = np.unique(groups, return_index=True)
    group_class = labels[first]
    held = np.zeros(len(ids), dtype=bool)
    for c in np.unique(group_class):
        members = np.nonzero(group_class == c)[0]  # positions in ids
        take = int(round(fraction * len(members)))
        held[rng.permutation(members)[:take]] = True
    return held[np.searchsorted(ids, groups)]


# ---------------------------------------------------------------------------------------------------
# Training


@dataclass
class FeatureTrainConfig:
    epochs: int = 30
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 24
    n_features: int = 64
    held_out: float = 0.2
    seed: int = 0


def train_feature_net(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                      config: FeatureTrainConfig = FeatureTrainConfig(), progress: bool = False,
                      dtype: torch.dtype = torch.float32) -> FeatureModel:
    """Train on the rows outside the held-out groups; report accuracy on the held-out rows.

    images: (N,H,H,3) uint8; labels: (N,K) one-hot (or soft: argmax is the class).
    dtype: the precision the weights will be stored in; they are rounded to it before the feature
    statistics and accuracies are measured, so these hold for the stored net exactly.
    Deterministic given config.seed: weights, order and split all come from it, and training runs on
    one thread (a net this small gains nothing from more, and the thread count changes how float
    sums round). The global RNG and thread count are left as they were.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_feature_net(images, labels, classes, config, progress, dtype)
    finally:
        torch.set_num_threads(threads)


def _train_feature_net(images, labels, classes, config, progress, dtype) -> FeatureModel:
    targets = labels.argmax(1)
    groups = sprite_groups(images)
    held = held_out_split(groups, targets, config.held_out, config.seed)
    x = to_float(images)
    y = torch.from_numpy(targets).long()
    train_rows = torch.from_numpy(np.nonzero(~held)[0])
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = SpriteFeatureNet(len(classes), config.width, config.n_features, images.shape[1], images.shape[3])
    order = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = -(-len(train_rows) // config.batch)
    total = config.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total)
    bar = tqdm(total=total, disable=not progress or None, unit="step", leave=False)
    net.train()
    for _ in range(config.epochs):
        perm = train_rows[torch.randperm(len(train_rows), generator=order)]
        for lo in range(0, len(perm), config.batch):
            rows = perm[lo:lo + config.batch]
            loss = nn.functional.cross_entropy(net(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    net.eval()
    round_to(net, dtype)
    net.standardize(x[train_rows])
    round_to(net, dtype)
    model = FeatureModel(net, tuple(classes), {})
    predicted = model.predict(images)
    correct = predicted == targets
    model.info = {
        "held_out": {"accuracy": round(float(correct[held].mean()), 4),
                     "balanced_accuracy": round(balanced_accuracy(predicted[held], targets[held], len(classes)), 4),
                     "rows": int(held.sum()), "groups": int(len(np.unique(groups[held]))),
                     "split": f"by sprite: mirror images and duplicates (rms <= {NEAR_DUPLICATE_RMS} levels) "
                              f"stay on one side; {config.held_out:.0%} of each class's groups held out"},
        "train": {"accuracy": round(float(correct[~held].mean()), 4), "rows": int((~held).sum()),
                  "groups": int(len(np.unique(groups[~held])))},
        "config": asdict(config), "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()} CPU, 1 thread", "torch": torch.__version__,
        "credit": CREDIT,
    }
    return model


def round_to(net: nn.Module, dtype: torch.dtype) -> None:
    """Round the float weights and buffers of net to dtype's precision (keeping their own dtype)."""
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))


def balanced_accuracy(predicted: np.ndarray, targets: np.ndarray, n_classes: int) -> float:
    """Mean over the classes present in targets of the fraction of that class predicted right."""
    present = [c for c in range(n_classes) if (targets == c).any()]
    return float(np.mean([(predicted[targets == c] == c).mean() for c in present]))


# ---------------------------------------------------------------------------------------------------
# Files


def save_features(model: FeatureModel, path: str | os.PathLike, dtype: torch.dtype = torch.float16) -> None:
    """Write the net as .safetensors (floats as dtype) with JSON metadata; atomically."""
    tensors = {k: v.to(dtype).contiguous() for k, v in model.net.state_dict().items()}
    config = {"format": FORMAT, "net": model.net.config(), "classes": list(model.classes),
              "dtype": str(dtype).replace("torch.", ""), "info": model.info}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(config)}))


def load_features(path: str | os.PathLike | None = None) -> FeatureModel:
    """Load a feature net written by save_features (None: the shipped one), as float32 on the CPU."""
    path = Path(path) if path is not None else DEFAULT_FEATURES
    if not path.is_file():
        raise SpriteDiffError(f"feature net not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
        config = json.loads(metadata[METADATA_KEY])
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise SpriteDiffError(f"{path} is not a readable spritediff feature net: {err}") from None
    if config.get("format") != FORMAT:
        raise SpriteDiffError(f"{path} has format {config.get('format')!r}; this version reads {FORMAT}")
    net_config = dict(config["net"])
    if net_config.pop("arch", None) != "SpriteFeatureNet":
        raise SpriteDiffError(f"{path}: unknown feature architecture {config['net'].get('arch')!r}")
    net = SpriteFeatureNet(**net_config)
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as err:
        raise SpriteDiffError(f"{path} does not fit SpriteFeatureNet: {str(err).splitlines()[0]}") from None
    return FeatureModel(net.eval(), tuple(config["classes"]), config.get("info", {}), str(path))


# ---------------------------------------------------------------------------------------------------
# `spritediff train-features`


def add_train_features_parser(sub) -> None:
    d = FeatureTrainConfig()
    p = sub.add_parser("train-features", help="train the sprite feature net that eval's FD/KID use",
                       description="Train a small CNN on the sprite classes (deterministic given --seed; a minute or "
                                   "two on a CPU) and write it as .safetensors with its held-out accuracy, measured "
                                   "on a split by sprite (mirror images and duplicates stay on one side).")
    p.add_argument("--data", required=True, help="(N,H,H,3) uint8 .npy (the course's sprites file or the base set), "
                                                 "or a folder with one subfolder of images per class")
    p.add_argument("--labels", help="(N,K) one-hot .npy (the course's labels file); needed with .npy data")
    p.add_argument("--out", required=True, help="feature net file to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the training rows (default {d.epochs})")
    p.add_argument("--batch", type=int, default=d.batch, help=f"batch size (default {d.batch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate, decayed linearly to 0 "
                                                          f"(default {d.lr})")
    p.add_argument("--width", type=int, default=d.width, help=f"channels of the first conv stage (default {d.width})")
    p.add_argument("--n-features", type=int, default=d.n_features,
                   help=f"size of the feature layer FD/KID use (default {d.n_features})")
    p.add_argument("--held-out", type=float, default=d.held_out,
                   help=f"fraction of each class's sprites held out for the accuracy (default {d.held_out})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of weights, order and split (default {d.seed})")
    p.add_argument("--fp32", action="store_true", help="store the weights in float32 (default float16)")
    p.set_defaults(run=run_train_features)


def run_train_features(args) -> int:
    from .checkpoint import model_out_path
    from .data import base_set, load_data

    out = model_out_path(args.out)
    for name in ("epochs", "batch", "width", "n_features"):
        if getattr(args, name) < 1:
            raise SpriteDiffError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.held_out < 1:
        raise SpriteDiffError(f"--held-out must be between 0 and 1, got {args.held_out}")
    data = load_data(args.data, args.labels)
    if data.labels is None:
        raise SpriteDiffError("the feature net learns the classes: pass --labels with .npy data")
    images, labels = base_set(data.images.numpy(), data.labels.numpy())
    if images.shape[1] % 4:
        raise SpriteDiffError(f"images must be a multiple of 4 pixels high, got {images.shape[1]}")
    config = FeatureTrainConfig(epochs=args.epochs, batch=args.batch, lr=args.lr, width=args.width,
                                n_features=args.n_features, held_out=args.held_out, seed=args.seed)
    dtype = torch.float32 if args.fp32 else torch.float16
    model = train_feature_net(images, labels, data.classes, config, progress=sys.stderr.isatty(), dtype=dtype)
    model.info = {"command": command_line(), "seed": args.seed,
                  "data": {"file": Path(args.data).name, "rows_used": len(images), "md5": md5(args.data)},
                  **model.info}
    save_features(model, out, dtype)
    held = model.info["held_out"]
    print(f"wrote {out}: held-out accuracy {held['accuracy']:.3f} on {held['rows']} images ({held['groups']} sprites), "
          f"trained on {model.info['train']['rows']} in {model.info['wall_seconds']} s")
    return 0


def command_line() -> str:
    """The command as typed, when run as `spritediff ...` or `python -m spritediff ...`."""
    if Path(sys.argv[0]).name in ("spritediff", "__main__.py"):
        return " ".join(["spritediff"] + sys.argv[1:])
    return "python API"


def md5(path: str | os.PathLike) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
