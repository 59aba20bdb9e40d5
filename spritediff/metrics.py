"""FD, KID, precision and recall of sprite sets in the sprite feature net's feature space.

FD and KID are computed by torchmetrics. Precision and recall (Kynkäänniemi et al., 2019) split what
FD mixes: precision is the fraction of generated sprites that fall inside the real sprites' manifold
(each real sprite's ball reaching its k-th nearest real neighbour), recall the fraction of real
sprites inside the generated ones' manifold. Poor sprites lower precision; too few kinds lower recall.

torchmetrics' FrechetInceptionDistance and KernelInceptionDistance take any nn.Module as `feature=`;
with one, they need neither torch-fidelity nor downloaded Inception weights, and FD's matrix square
root is torch's own (eigenvalues of Sigma_1 Sigma_2), so scipy is not needed either.
Images in: (N,H,W,3) uint8, the on-disk layout.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

# Scores are computed by one process: under torchrun, rank 0 scores the gathered samples alone, so torchmetrics must
# not wait for the other ranks to sync its states (it would whenever a process group exists)
LOCAL = {"sync_on_compute": False}

from .features import FeatureModel, SpriteFeatureNet
from .pixels import to_model_range

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
NEIGHBOURS = 3  # k of the k-NN manifolds, as Kynkäänniemi et al. recommend


class SpriteFeatures(nn.Module):
    """The `feature=` module for torchmetrics: (N,C,H,W) uint8 -> (N,n_features) float64 features."""

    def __init__(self, net: SpriteFeatureNet):
        super().__init__()
        self.net = net.eval()
        self.num_features = net.feature_dim  # torchmetrics reads this instead of probing with a random image

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N,C,H,W) uint8 -> (N,feature_dim) float64."""
        return self.net.features(to_model_range(images)).double()

    def train(self, mode: bool = True) -> "SpriteFeatures":
        return super().train(False)  # the features never change with the metric's mode


def _nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,H,W,C) uint8 -> (N,C,H,W) uint8 tensor."""
    images = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected (N,H,W,C) uint8 images, got {tuple(images.shape)} {images.dtype}")
    return images.permute(0, 3, 1, 2)


class SpriteQuality:
    """FD and KID of image sets against one reference set, whose features are computed once.

        quality = SpriteQuality(feature_model, real_images)
        quality.score(generated)   # {"fd": ..., "kid": ..., "kid_std": ...}

    KID draws its subsets from `seed` (the global RNG is left as it was), so a score is reproducible.
    """

    def __init__(self, features: FeatureModel, reference: np.ndarray, kid_subsets: int = KID_SUBSETS,
                 kid_subset_size: int = KID_SUBSET_SIZE, seed: int = 0, batch: int = 1024):
        self.extractor = SpriteFeatures(features.net)
        self.kid_subsets, self.kid_subset_size, self.seed, self.batch = kid_subsets, kid_subset_size, seed, batch
        self.fid = FrechetInceptionDistance(feature=self.extractor, reset_real_features=False, **LOCAL)
        with warnings.catch_warnings():  # "KID saves all features": a few thousand 64-vectors here
            warnings.simplefilter("ignore", UserWarning)
            self.kid = KernelInceptionDistance(feature=self.extractor, reset_real_features=False,
                                               subsets=kid_subsets, subset_size=kid_subset_size, **LOCAL)
        self.n_reference = len(reference)
        self.features = features
        self.reference_features = features.features(reference)
        self.reference_radii = knn_radii(self.reference_features)
        self.reference_mix = class_mix(features, reference)
        self._update(reference, real=True)

    def _update(self, images: np.ndarray, real: bool) -> None:
        if len(images) < 2:
            raise ValueError(f"FD and KID need at least 2 images per set, got {len(images)}")
        x = _nchw(images)
        for lo in range(0, len(x), self.batch):
            self.fid.update(x[lo:lo + self.batch], real=real)
            self.kid.update(x[lo:lo + self.batch], real=real)

    def score(self, images: np.ndarray) -> dict:
        """(N,H,W,3) uint8, N >= 2 -> {"fd", "kid", "kid_std", "precision", "recall", "class_mix",
        "class_mix_gap"} against the reference (class_mix: the feature net's head's (K,) class shares)."""
        self.fid.reset()
        self.kid.reset()
        self._update(images, real=False)
        fd = float(self.fid.compute())
        self.kid.subset_size = min(self.kid_subset_size, len(images), self.n_reference)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            kid, kid_std = self.kid.compute()
        generated = self.features.features(images)
        precision = coverage(self.reference_features, self.reference_radii, generated)
        recall = coverage(generated, knn_radii(generated), self.reference_features)
        mix = class_mix(self.features, images)
        return {"fd": fd, "kid": float(kid), "kid_std": float(kid_std), "precision": precision, "recall": recall,
                "class_mix": tuple(float(v) for v in mix), "class_mix_gap": mix_gap(mix, self.reference_mix)}


def class_mix(features: FeatureModel, images: np.ndarray) -> np.ndarray:
    """(K,) float64: the share of images that the feature net's head assigns to each of its K classes."""
    return np.bincount(features.predict(images), minlength=len(features.classes)) / len(images)


def mix_gap(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two (K,) class mixes, 0.5 sum |p - q|: 0 the same mix, 1 no class shared.

    Both mixes come from the same head, so its mistakes on real sprites cancel to first order; a model that
    draws one class too often (or never draws another) shows here even when each sprite looks real."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def knn_radii(features: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """(N,D) -> (N,) distance from each point to its k-th nearest other point of the same set."""
    k = min(k, len(features) - 1)
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (0)


def coverage(manifold: torch.Tensor, radii: torch.Tensor, points: torch.Tensor) -> float:
    """Fraction of points (M,D) inside at least one ball (manifold (N,D), radii (N,))."""
    inside = torch.cdist(points, manifold) <= radii[None]
    return float(inside.any(1).double().mean())


def frechet_distance(features: FeatureModel, a: np.ndarray, b: np.ndarray) -> float:
    """FD between two (N,H,W,3) uint8 sets (N >= 2 each), by torchmetrics."""
    fid = FrechetInceptionDistance(feature=SpriteFeatures(features.net), **LOCAL)
    fid.update(_nchw(a), real=True)
    fid.update(_nchw(b), real=False)
    return float(fid.compute())


def seed_reach(fd_between: float, fd: float) -> float:
    """How far FD to the real images can move between two sample sets that are fd_between apart, one of them at fd.

    FD is the squared 2-Wasserstein distance of the fitted Gaussians, a metric, so |sqrt(FD_a) - sqrt(FD_b)| <=
    sqrt(fd_between), hence |FD_a - FD_b| <= 2 sqrt(fd_between fd) + fd_between: a bound, not an estimate."""
    fd_between, fd = max(fd_between, 0.0), max(fd, 0.0)
    return 2.0 * (fd_between * fd) ** 0.5 + fd_between


def class_accuracy(features: FeatureModel, images: np.ndarray, contexts: torch.Tensor,
                   classes: tuple[str, ...]) -> float | None:
    """Fraction of images the feature net's head assigns to the class their context asks for.

    contexts: (N,K) over the sampling model's `classes`; the asked-for class is the largest entry
    (rows that are all zero, i.e. unconditional, are left out). None when no row can be scored or
    the asked-for class is unknown to the feature net.
    """
    asked = contexts.argmax(1).numpy()
    scored = (contexts.abs().sum(1) > 0).numpy()
    if not scored.any():
        return None
    names = [classes[i] for i in asked[scored]]
    if any(name not in features.classes for name in names):
        return None
    wanted = np.array([features.classes.index(name) for name in names])
    return float((features.predict(images[scored]) == wanted).mean())
