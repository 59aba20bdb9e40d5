"""Context specs: which classes a sample is conditioned on, as a float vector over the class names.

Specs: a class name ("hero"), a mix ("hero=1,food=0.6"), "random" (each sample one random class),
"none" (the zero vector: unconditional).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .errors import SpriteDiffError


def parse_context(spec: str | None, classes: Sequence[str], n: int,
                  generators: Sequence[torch.Generator] | None = None) -> torch.Tensor | None:
    """(n, len(classes)) float32 context for spec, or None for no context.

    generators: one per sample, used by "random" so that sample i's class does not depend on n.
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    spec = spec.strip()
    if spec.lower() == "random":
        if generators is None:
            raise ValueError("a random context needs one generator per sample")
        picks = [int(torch.randint(len(classes), (1,), generator=g)) for g in generators]
        return torch.nn.functional.one_hot(torch.tensor(picks), len(classes)).float()
    return context_vector(spec, classes).expand(n, -1).clone()


def context_vector(spec: str, classes: Sequence[str]) -> torch.Tensor:
    """(len(classes),) float32 vector for "name" or "name=w,name=w"; weights are finite numbers."""
    vector = torch.zeros(len(classes))
    seen = set()
    for part in spec.split(","):
        name, _, weight = part.partition("=")
        name = name.strip().lower()
        if name not in classes:
            raise SpriteDiffError(f"unknown class {name!r} in context {spec!r}; classes are: {', '.join(classes)}")
        if name in seen:
            raise SpriteDiffError(f"class {name!r} given twice in context {spec!r}")
        seen.add(name)
        vector[classes.index(name)] = _weight(weight, name) if weight.strip() else 1.0
    return vector


def _weight(text: str, name: str) -> float:
    """A context weight: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise SpriteDiffError(f"context weight {text.strip()!r} for {name!r} is not a number") from None
    if not math.isfinite(value):
        raise SpriteDiffError(f"context weight for {name!r} must be a finite number, got {text.strip()!r}")
    return value
