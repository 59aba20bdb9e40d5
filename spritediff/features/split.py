"""A split of the sprites by sprite: mirror images, duplicates and near-copies stay on one side.

The course's base set holds each sprite twice (it and its mirror image), some sprites several times,
and the JPEG rebuild left near-copies a few levels apart; a random split by row would put one copy on
each side and measure memory, not generalisation.
"""
from __future__ import annotations

import numpy as np

NEAR_DUPLICATE_RMS = 8.0  # pixel levels (0..255): the JPEG-rebuilt mirror pairs differ by up to ~6.6


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
