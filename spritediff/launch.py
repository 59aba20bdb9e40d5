"""What torchrun told this process (RANK, WORLD_SIZE, LOCAL_RANK), read without importing torch: for the CLI's
messages before any process group is joined (an argument error is printed by rank 0 alone)."""
from __future__ import annotations

import os


def launched_rank() -> int:
    """This process's rank in a torchrun job; 0 outside torchrun."""
    return int(os.environ.get("RANK", "0") or 0)


def launched_size() -> int:
    """The number of processes of this torchrun job; 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def local_device(device: str | None) -> str | None:
    """--device as given, except that cuda under torchrun means this process's own card (cuda:LOCAL_RANK)."""
    local = os.environ.get("LOCAL_RANK")
    if launched_size() > 1 and local is not None and device == "cuda":
        return f"cuda:{local}"
    return device
