"""Context specs: which classes a sample is conditioned on, as a float vector over the class names.

Specs: a class name ("hero"), a blend ("hero=1,food=0.6"), "random" (each sample one class, all equally
likely), "mix" (each sample one class, drawn with the shares of the model's training labels, so that n samples
have the training set's class mix), "none" (the zero vector: unconditional).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .errors import SpriteDiffError

DRAWN = ("random", "mix")  # specs that draw each sample's class from its own generator


def parse_context(spec: str | None, classes: Sequence[str], n: int,
                  generators: Sequence[torch.Generator] | None = None,
                  class_mix: Sequence[float] | None = None) -> torch.Tensor | None:
    """(n, len(classes)) float32 context for spec, or None for no context.

    generators: one per sample, used by "random" and "mix" so that sample i's class does not depend on n.
    class_mix: the model's training class shares (SpriteModel.class_mix), which "mix" draws from.
    """
    if spec is None or spec.strip().lower() == "none":
        return None
    if not spec.strip():
        raise SpriteDiffError("empty context: give a class name, a blend like 'hero=1,food=0.6', 'random', 'mix' or "
                              "'none'")
    check_has_classes(spec.strip(), classes)
    spec, drawn = spec.strip(), spec.strip().lower()
    if drawn in DRAWN:
        if generators is None:
            raise ValueError(f"a {drawn} context needs one generator per sample")
        if drawn == "random":
            picks = [int(torch.randint(len(classes), (1,), generator=g)) for g in generators]
        else:
            shares = torch.tensor(check_mix_available(class_mix), dtype=torch.float64)
            picks = [int(torch.multinomial(shares, 1, generator=g)) for g in generators]
        return torch.nn.functional.one_hot(torch.tensor(picks, dtype=torch.long), len(classes)).float()
    return context_vector(spec, classes).expand(n, -1).clone()


def check_has_classes(spec: str, classes: Sequence[str]) -> None:
    """A user error for any context given to a model without classes (trained on unlabelled images)."""
    if not classes:
        raise SpriteDiffError(f"context {spec[:40]!r}: this model has no classes (it was trained on images without "
                              f"labels or class folders); sample it without a context")


def check_mix_available(class_mix: Sequence[float] | None) -> Sequence[float]:
    """class_mix, or a user error for a model that stores none."""
    if class_mix is None:
        raise SpriteDiffError("context 'mix' draws classes with the model's training class mix, and this model "
                              "stores none (trained without labels, or before spritediff stored it); use a class "
                              "name, 'random' or 'none'")
    return class_mix


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
