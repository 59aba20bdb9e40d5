"""The one check that a batch of samples came out finite, naming the likely cause when it did not."""
from __future__ import annotations

import torch

from .errors import SpriteDiffError

LARGE_GUIDANCE = 10.0  # guidance w above this can overflow: the guided eps is (1 + w) eps_c - w eps_u
LARGE_CONTEXT_WEIGHT = 10.0  # a class weight above this is far outside the one-hot rows a model was trained on


def check_finite(x0: torch.Tensor, first_index: int, net: torch.nn.Module, guidance: float,
                 contexts: torch.Tensor | None) -> None:
    """A SpriteDiffError if any sample of x0 (B,C,H,W) holds NaN or inf, naming it (first_index + row) and the
    likely cause. contexts: the batch's (B, K) context rows, or None when it was sampled without a context."""
    bad = ~torch.isfinite(x0.flatten(1)).all(1)
    if bad.any():
        first = first_index + int(bad.nonzero()[0])
        raise SpriteDiffError(f"sample {first} is not finite (NaN or inf) after sampling; likely cause: "
                              f"{likely_cause(net, guidance, contexts)}")


def likely_cause(net: torch.nn.Module, guidance: float, contexts: torch.Tensor | None) -> str:
    """Damaged weights first, then whichever of guidance and context weights is large (guidance acts only with a
    context), else an overflow inside the net."""
    if not all(torch.isfinite(p).all() for p in net.state_dict().values() if p.is_floating_point()):
        return "the model's weights hold NaN or inf (a damaged or diverged model file)"
    causes = []
    if contexts is not None and guidance > LARGE_GUIDANCE:
        causes.append(f"the guidance ({guidance:g}) is too large")
    if contexts is not None and contexts.abs().max().item() > LARGE_CONTEXT_WEIGHT:
        causes.append(f"the context weights (largest {contexts.abs().max().item():g}) are too large")
    return " and ".join(causes) or "the model's output overflowed (a diverged model?)"
