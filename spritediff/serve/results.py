"""Finished results kept in memory for their downloads: grid PNG, denoising GIF and .npy, all made in memory.

A result is found by a random id that the server made (32 hex digits); the id is only ever a dictionary key,
never part of a file name or path. The store keeps the `kept` most recently used results.
"""
from __future__ import annotations

import io
import re
import secrets
import threading
from collections import OrderedDict

import numpy as np

from ..sampling import SampleResult
from .images import GRID_SCALE, png_bytes

ID_PATTERN = re.compile(r"[0-9a-f]{32}")
DOWNLOADS = {"grid.png": "image/png", "denoise.gif": "image/gif", "samples.npy": "application/octet-stream"}


class ResultStore:
    """id -> (result, base name for downloads), least recently used dropped beyond `kept`. Thread-safe."""

    def __init__(self, kept: int):
        self.kept = kept
        self._items: OrderedDict[str, tuple[SampleResult, str]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, result: SampleResult, name: str) -> str:
        """Keep result (a SampleResult or one of the latent API's results); its new id. name: made by the server
        from checked settings, e.g. "ddim20-seed0" (used in download file names)."""
        result_id = secrets.token_hex(16)
        with self._lock:
            self._items[result_id] = (result, name)
            while len(self._items) > self.kept:
                self._items.popitem(last=False)
        return result_id

    def get(self, result_id: str) -> tuple[SampleResult, str] | None:
        if not isinstance(result_id, str) or not ID_PATTERN.fullmatch(result_id):
            return None
        with self._lock:
            item = self._items.get(result_id)
            if item is not None:
                self._items.move_to_end(result_id)
            return item


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
