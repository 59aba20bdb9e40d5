"""`spritediff train-features`: train the feature net that the quality metrics use."""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from ..errors import SpriteDiffError
from .config import FeatureTrainConfig


def add_train_features_parser(sub) -> None:
    d = FeatureTrainConfig()
    p = sub.add_parser("train-features",
                       description="Train a small CNN to tell each sprite from every other and to name its class "
                                   "(deterministic given --seed; a few minutes on a CPU) and write it as .safetensors with its held-out accuracy, measured "
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
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help=f"temperature of the contrastive loss (default {d.temperature})")
    p.add_argument("--held-out", type=float, default=d.held_out,
                   help=f"fraction of each class's sprites held out for the accuracy (default {d.held_out})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of weights, order and split (default {d.seed})")
    p.add_argument("--fp32", action="store_true", help="store the weights in float32 (default float16)")
    p.set_defaults(run=run_train_features)


def run_train_features(args) -> int:
    import torch

    from ..data import base_set, load_data
    from ..outputs import model_out_path
    from ..provenance import command_line
    from .files import save_features
    from .training import train_feature_net

    out = model_out_path(args.out)
    for name in ("epochs", "batch", "width", "n_features"):
        if getattr(args, name) < 1:
            raise SpriteDiffError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.held_out < 1:
        raise SpriteDiffError(f"--held-out must be between 0 and 1, got {args.held_out}")
    data = load_data(args.data, args.labels, channels=3)  # the feature net reads RGB
    if data.labels is None:
        raise SpriteDiffError("the feature net learns the classes: pass --labels with .npy data")
    images, labels = base_set(data.images.numpy(), data.labels.numpy())
    if images.shape[1] % 4:
        raise SpriteDiffError(f"images must be a multiple of 4 pixels high, got {images.shape[1]}")
    config = FeatureTrainConfig(epochs=args.epochs, batch=args.batch, lr=args.lr, width=args.width,
                                n_features=args.n_features, temperature=args.temperature, held_out=args.held_out,
                                seed=args.seed)
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


def md5(path: str | os.PathLike) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
