"""A trained feature net with its class names and record, and its .safetensors file."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..errors import SpriteDiffError
from ..outputs import write_atomically
from ..safetensors_io import METADATA_KEY, read_safetensors
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
    config, state = read_safetensors(path, "feature net", FORMAT)
    net_config = config.get("net")
    arch = net_config.get("arch") if isinstance(net_config, dict) else None
    if arch != "SpriteFeatureNet":
        raise SpriteDiffError(f"{path}: unknown feature architecture {arch!r}")
    net_config = {k: v for k, v in net_config.items() if k != "arch"}
    try:
        net = SpriteFeatureNet(**net_config)
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, TypeError, ValueError) as err:
        raise SpriteDiffError(f"{path} does not fit SpriteFeatureNet: {str(err).splitlines()[0]}") from None
    return FeatureModel(net.eval(), tuple(config["classes"]), config.get("info", {}), str(path))
