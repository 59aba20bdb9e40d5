"""Finished results kept in memory for their downloads: grid PNG, denoising GIF and .npy, all made in memory.

A result is found by a random id that the server made (32 hex digits); the id is only ever a dictionary key,
never part of a file name or path. The store keeps every result for a stated time within a memory budget.
"""
from __future__ import annotations

import io
import re
import secrets
import threading
import time
from collections import OrderedDict

import numpy as np
import torch

from ..engine import SampleResult
from .images import GRID_SCALE, png_bytes

ID_PATTERN = re.compile(r"[0-9a-f]{32}")
DOWNLOADS = {"grid.png": "image/png", "denoise.gif": "image/gif", "samples.npy": "application/octet-stream"}


def result_bytes(result) -> int:
    """Bytes of the arrays a result holds (images, frames, inputs, latents, ...): what keeping it costs."""
    arrays = [value for value in vars(result).values() if isinstance(value, (np.ndarray, torch.Tensor))]
    arrays += [array for pair in (result.frames or []) for array in pair]
    return sum(a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size() for a in arrays)


def worst_result_bytes(config, pixel_bytes: int) -> int:
    """An upper bound on result_bytes of any one request within config's caps. pixel_bytes: H * W * C of one
    uint8 sprite. A sample keeps max_n sprites and GIF_FRAMES (x_t, x0_hat) frames of its first FRAMES_N; an edit
    at most max_edit_n results and one frame pair per step, inversion encoding and decoding (2 * steps); float32
    latents, inputs and the interpolation's frames are counted four bytes a value."""
    from ..defaults import FRAMES_N
    from .runs import GIF_FRAMES

    sample = pixel_bytes * (config.max_n + 2 * GIF_FRAMES * min(config.max_n, FRAMES_N))
    edit = pixel_bytes * (config.max_edit_n + 2 * 2 * config.max_edit_steps * config.max_edit_n)
    latents = 4 * pixel_bytes * (4 + 2 * config.max_interp_frames)
    return max(sample, edit) + latents


class ResultStore:
    """id -> (result, base name for downloads), each kept `keep_s` seconds after it was made. Thread-safe.

    The promise: a result stays downloadable for keep_s, whatever the load. It holds because the server admits a
    request only while the results kept plus a worst-case result for every request admitted and not yet finished
    fit in budget_bytes (has_room, asked by the Scheduler); when they do not, the request is refused (503) before
    any work. So nothing kept is ever dropped early, and memory stays under the budget.
    """

    def __init__(self, keep_s: float, budget_bytes: int, clock=time.monotonic):
        self.keep_s, self.budget_bytes, self.clock = keep_s, budget_bytes, clock
        self._items: OrderedDict[str, tuple[SampleResult, str, float, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, result: SampleResult, name: str) -> str:
        """Keep result (a SampleResult or one of the latent API's results); its new id. name: made by the server
        from checked settings, e.g. "ddim20-seed0" (used in download file names)."""
        result_id, size = secrets.token_hex(16), result_bytes(result)
        with self._lock:
            self._expire()
            self._items[result_id] = (result, name, self.clock(), size)
            self._bytes += size
        return result_id

    def get(self, result_id: str) -> tuple[SampleResult, str] | None:
        if not isinstance(result_id, str) or not ID_PATTERN.fullmatch(result_id):
            return None
        with self._lock:
            self._expire()
            item = self._items.get(result_id)
            return None if item is None else item[:2]

    def has_room(self, pending: int, worst_bytes: int) -> bool:
        """Whether the kept results plus `pending` results of at most worst_bytes each fit in the budget."""
        with self._lock:
            self._expire()
            return self._bytes + pending * worst_bytes <= self.budget_bytes

    def usage(self) -> dict:
        """{"results": count, "bytes": their size, "budget_bytes", "keep_s"} (for /api/status)."""
        with self._lock:
            self._expire()
            return {"results": len(self._items), "bytes": self._bytes, "budget_bytes": self.budget_bytes,
                    "keep_s": self.keep_s}

    def _expire(self) -> None:
        """Drop results older than keep_s (the oldest come first). Call with the lock held."""
        deadline = self.clock() - self.keep_s
        while self._items:
            result_id, (_, _, made_at, size) = next(iter(self._items.items()))
            if made_at > deadline:
                return
            del self._items[result_id]
            self._bytes -= size


def download(result: SampleResult, kind: str) -> bytes | None:
    """The bytes of one download (a key of DOWNLOADS) of result; None for a GIF of a result without frames."""
    if kind == "grid.png":
        return png_bytes(result.grid(scale=GRID_SCALE))  # each result type lays out its own grid
    if kind == "samples.npy":
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(result.images), allow_pickle=False)
        return buffer.getvalue()
    if kind == "denoise.gif":
        if not result.frames and not _is_strip(result):
            return None
        buffer = io.BytesIO()
        result.save_gif(buffer)
        return buffer.getvalue()
    return None


def _is_strip(result) -> bool:
    """Interpolation results make their GIF from their frames (the strip), not from denoising frames."""
    return hasattr(result, "alphas")
