"""Reading our .safetensors files: the tensors and the JSON object stored under one metadata key, every fault a
one-line SpriteDiffError that names the file. Models (checkpoint.py) and feature nets (features/files.py) share it.
"""
from __future__ import annotations

import json
import os

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from .errors import SpriteDiffError
from .checks import shown

METADATA_KEY = "spritediff"


def read_safetensors(path: str | os.PathLike, what: str, file_format: str) -> tuple[dict, dict]:
    """(config, tensors) of the file at path: config is the JSON object under METADATA_KEY, and its "format" must be
    file_format. what names the kind of file in the errors ("model", "feature net")."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise SpriteDiffError(f"{path} is not a readable .safetensors file (truncated or corrupt?): {err}") from None
    if METADATA_KEY not in metadata:
        raise SpriteDiffError(f"{path} is not a spritediff {what} (no '{METADATA_KEY}' metadata)")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError):
        raise SpriteDiffError(f"{path} has unreadable spritediff metadata") from None
    if not isinstance(config, dict):
        raise SpriteDiffError(f"{path}: its spritediff metadata is not a JSON object")
    if config.get("format") != file_format:
        raise SpriteDiffError(f"{path} has format {shown(config.get('format'))}; this version reads {file_format}")
    return config, tensors
