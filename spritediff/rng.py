"""Random streams: one CPU torch.Generator per key tuple, e.g. (seed, sample index) or (seed, step).

Keys are mixed by numpy's SeedSequence, so nearby keys give unrelated streams.
"""
from __future__ import annotations

import numpy as np
import torch


def keyed_generator(*keys: int) -> torch.Generator:
    """A CPU generator whose stream depends on keys alone."""
    state = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))  # two 32-bit words, no overlap
