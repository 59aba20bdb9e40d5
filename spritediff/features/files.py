"""A trained feature net with its class names and record, and its .safetensors file."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..checkpoint import METADATA_KEY
from ..errors import SpriteDiffError
from ..outputs import write_atomically
from ..pixels import to_model_space as to_float
from .net import SpriteFeatureNet

FORMAT = "spritediff-features/2"
DEFAULT_FEATURES = Path(__file__).parent.parent / "assets" / "sprite_features.safetensors"


@dataclass
class FeatureModel:
    """A trained feature net with its class names and how it was made (command, seed, accuracy, credit)."""

    net: SpriteFeatureNet
    classes: tuple[str, ...]
    info: dict
    path: str | None = None

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """(N,H,W,C) uint8 images -> (N,feature_dim) float64 features (on the CPU)."""
        return torch.cat([self.net.features(to_float(chunk)).double().cpu() for chunk in _chunks(images, batch)])

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor, batch: int = 1024) -> np.ndarray:
        """(N,H,W,C) uint8 images -> (N,) int64 predicted class indices."""
        return torch.cat([self.net(to_float(chunk)).argmax(1).cpu() for chunk in _chunks(images, batch)]).numpy()


def _chunks(images, batch: int):
    return (images[lo:lo + batch] for lo in range(0, len(images), batch))


def save_features(model: FeatureModel, path: str | os.PathLike, dtype: torch.dtype = torch.float16) -> None:
    """Write the net as .safetensors (floats as dtype) with JSON metadata; atomically."""
    tensors = {k: v.to(dtype).contiguous() for k, v in model.net.state_dict().items()}
    config = {"format": FORMAT, "net": model.net.config(), "classes": list(model.classes),
              "dtype": str(dtype).replace("torch.", ""), "info": model.info}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(config, allow_nan=False)}))


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
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise SpriteDiffError(f"{path} is not a readable spritediff feature net: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise SpriteDiffError(f"{path} has format {found!r}; this version reads {FORMAT}")
    net_config = dict(config["net"])
    if net_config.pop("arch", None) != "SpriteFeatureNet":
        raise SpriteDiffError(f"{path}: unknown feature architecture {config['net'].get('arch')!r}")
    try:
        net = SpriteFeatureNet(**net_config)
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, TypeError, ValueError) as err:
        raise SpriteDiffError(f"{path} does not fit SpriteFeatureNet: {str(err).splitlines()[0]}") from None
    return FeatureModel(net.eval(), tuple(config["classes"]), config.get("info", {}), str(path))
