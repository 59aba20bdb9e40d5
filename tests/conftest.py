"""Shared fixtures: tiny random models (fast on the CPU) and the sprite data folder beside the repo."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the oracle module

from spritediff.checkpoint import SpriteModel, save_model  # noqa: E402
from spritediff.sprites import COURSE_CLASSES  # noqa: E402
from spritediff.models import ContextUnet  # noqa: E402
from spritediff.schedule import Schedule  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads only add sync cost, and CI shares two cores

SPRITES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sprites"


def run(args) -> int:
    """The CLI's exit code for args (any values, turned into strings), as `spritediff ARGS` would give it."""
    from spritediff.cli import main

    return main([str(a) for a in args])


def one_line_error(capsys, *words) -> str:
    """The stderr of a failed run: exactly one line, no traceback, containing every word."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spritediff: error:") and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def small_data(folder: Path, n: int = 24, size: int = 16, classes: int = 5) -> tuple[Path, Path]:
    """folder/x.npy (n random size x size RGB images, uint8) and folder/y.npy (one-hot labels of `classes`)."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    np.save(folder / "y.npy", np.eye(classes)[rng.integers(0, classes, n)] if classes else np.zeros((n, 0)))
    return folder / "x.npy", folder / "y.npy"


def fake_sprite_images(n: int, seed: int):
    """(n, 16, 16, 3) uint8 random 10x8 blocks on a black background: a stand-in for sprites (compared, not judged)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = np.zeros((n, 16, 16, 3), dtype=np.uint8)
    images[:, 3:13, 4:12] = rng.integers(0, 256, (n, 10, 8, 3), dtype=np.uint8)
    return images


def tiny_model(seed: int = 0, n_feat: int = 8) -> SpriteModel:
    """A random ContextUnet small enough that 500 sampler steps take well under a second per sample."""
    torch.manual_seed(seed)
    net = ContextUnet(n_feat=n_feat).eval()
    return SpriteModel(net, Schedule.course(), COURSE_CLASSES, {"source": "test"})


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(tiny_model(), path)
    return path


@pytest.fixture(scope="session")
def sprites_dir() -> Path:
    if not (SPRITES / "sprites_base1788_16x16.npy").is_file():
        message = f"sprite data not found at {SPRITES} (see the README: the images are not in the repo)"
        if os.environ.get("CI"):  # CI has the data beside the clone: a missing copy is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    return SPRITES
