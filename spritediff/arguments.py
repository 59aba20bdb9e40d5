"""Shared by the commands: argparse types (each refuses a bad value with a one-line message) and the
argument groups several commands take (--model; --precision and --eager)."""
from __future__ import annotations

import argparse
import math

from .checks import MAX_SEED, PRECISIONS, range_problem


def add_model_argument(parser) -> None:
    parser.add_argument("--model", help="a .safetensors model, a course .pth state_dict, or a shipped model: 'default' "
                                        "(the default when omitted) or 'distilled' (its 4-call student)")


def add_device_argument(parser) -> None:
    """--device, declared once for every command: checked by engine.resolve_device when the command runs."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:K or auto (default cpu)")


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    return bounded_int(1, None)(text)


def bounded_int(low: int, high: int | None):
    """An argparse type: an integer in low..high (high None: unbounded), with checks.range_problem's text."""

    def parse(text: str) -> int:
        value = integer(text)
        problem = range_problem(value, low, high)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


def seed_int(text: str) -> int:
    """An argparse type: a seed, 0..2^63-1."""
    return bounded_int(0, MAX_SEED)(text)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration(text: str) -> float:
    """An argparse type: a wall-clock span such as 90s, 30m, 1.5h or 1h30m, in seconds (> 0)."""
    import re

    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*",
                         text.lower())
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"expected a time such as 90s, 30m, 1.5h or 1h30m, got {text!r}")
    seconds = sum(float(v) * DURATION_UNITS[u] for v, u in zip(parts.groups(), "hms") if v)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0 s, got {text!r}")
    return seconds


def step_list(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected steps like 500,1000,2000, got {text!r}") from None
    if any(step < 1 for step in steps):
        raise argparse.ArgumentTypeError(f"steps must be at least 1, got {text!r}")
    return steps


def add_fast_path_arguments(p) -> None:
    """--precision and --eager, shared by sample, bench and eval."""
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32: exact and bit-reproducible; bf16: the net under bf16 autocast (1.5-1.7x faster a model call at "
                        "batch 32 and up on CPUs with AVX-512 BF16 or AMX, same quality: docs/results.md); auto "
                        "(default): bf16 on such a CPU when --batch-size gives at least 4 rows a call, else fp32")
    p.add_argument("--eager", action="store_true",
                   help="run the net as stored: no BatchNorm folding, channels-last or CUDA graph replay")
