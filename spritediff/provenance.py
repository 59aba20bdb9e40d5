"""How a file was made: the command line recorded in model and feature-net metadata."""
from __future__ import annotations

import sys
from pathlib import Path


def command_line() -> str:
    """The command as typed, when run as `spritediff ...` or `python -m spritediff ...`; else "python API"."""
    if Path(sys.argv[0]).name in ("spritediff", "__main__.py"):
        return " ".join(["spritediff"] + sys.argv[1:])
    return "python API"
