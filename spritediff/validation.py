"""Does a feature space see sample quality? The checks behind docs/metric.md.

A distance between image sets is only worth trusting once it is shown to grow with damage that a
person sees. `disturbance_curves` follows Heusel et al. (2017, Fig. 1): real sprites are damaged at
rising levels (spritediff.disturbances) and each damaged set is scored against the undamaged real
set; the score must rise with the level, for every kind of damage.
"""
from __future__ import annotations

import numpy as np

from .disturbances import DISTURBANCES
from .features import FeatureModel
from .metrics import SpriteQuality

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


def disturbance_curves(features: FeatureModel, reference: np.ndarray, images: np.ndarray,
                       levels=LEVELS, seed: int = 0, kid_subsets: int = 20) -> dict[str, list[dict]]:
    """For each disturbance: scores (fd, kid, precision, recall, ...) of `images` damaged at each level
    against `reference`, both (N,H,W,C) uint8. With images = reference, level 0 scores FD 0."""
    quality = SpriteQuality(features, reference, kid_subsets=kid_subsets, seed=seed)
    return {name: [quality.score(disturb(images, level, seed)) for level in levels]
            for name, disturb in DISTURBANCES.items()}


def rises(values: list[float]) -> bool:
    """True if every value is larger than the one before."""
    return all(b > a for a, b in zip(values, values[1:]))
