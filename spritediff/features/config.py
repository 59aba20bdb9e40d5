"""FeatureTrainConfig: what defines a feature net's training run. No torch, so the CLI's --help shows its
defaults without loading the training code."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FeatureTrainConfig:
    epochs: int = 60
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 32
    n_features: int = 128
    temperature: float = 0.2
    held_out: float = 0.2
    seed: int = 0
