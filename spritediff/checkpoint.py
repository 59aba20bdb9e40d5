"""Model files: one .safetensors with a JSON config in its metadata; course .pth state_dicts import.

No pickle: safetensors for our files, torch.load(weights_only=True) for the course's .pth.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import SpriteDiffError
from .models import ContextUnet
from .schedule import Schedule

FORMAT = "spritediff/1"
METADATA_KEY = "spritediff"
COURSE_CLASSES = ("hero", "non-hero", "food", "spell", "side-facing")
CREDIT = "Sprites by ElvGames, FrootsnVeggies and kyrise"
DEFAULT_MODEL = Path(__file__).parent / "assets" / "sprites_context.safetensors"


@dataclass
class SpriteModel:
    """A trained net with what it needs to be sampled: its schedule and its context class names."""

    net: ContextUnet
    schedule: Schedule
    classes: tuple[str, ...]
    info: dict = field(default_factory=dict)  # how it was made (training command, data, credit)
    path: str | None = None  # as the user gave it; None for the shipped default model

    def config(self) -> dict:
        return {"format": FORMAT, "net": self.net.config(), "schedule": self.schedule.to_config(),
                "classes": list(self.classes), "info": self.info}


def save_model(model: SpriteModel, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> None:
    """Write model to path atomically (temporary file, then rename); floats stored as dtype."""
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.net.state_dict().items()}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(model.config())}))


def model_out_path(path: str | os.PathLike) -> Path:
    """Check, before any work, that path can take a model file: a .safetensors name in an existing folder."""
    out = Path(path)
    if out.suffix != ".safetensors":
        raise SpriteDiffError(f"--out must end in .safetensors, got {out}")
    if not out.parent.is_dir():
        raise SpriteDiffError(f"--out folder {out.parent} does not exist")
    return out


def write_atomically(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path), then rename tmp_path over path; on failure nothing is left at path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates files owner-only; make them like any other file
        os.replace(tmp, path)
    except OSError as err:
        raise SpriteDiffError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_model(path: str | os.PathLike | None = None) -> SpriteModel:
    """Load a .safetensors model, or a course .pth state_dict (by extension). None: the default model."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        hint = " (no default model is installed; pass --model)" if path == DEFAULT_MODEL else ""
        raise SpriteDiffError(f"model file not found: {path}{hint}")
    if path.suffix in (".pth", ".pt"):
        return model_from_state_dict(read_course_state_dict(path), path=str(path))
    config, state = _read_safetensors(path)
    net = build_net(config.get("net", {}), path)
    load_state(net, state, path)
    return SpriteModel(net, Schedule.from_config(config["schedule"]), tuple(config["classes"]),
                       config.get("info", {}), None if path == DEFAULT_MODEL else str(path))


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise SpriteDiffError(f"{path} is not a readable .safetensors file (truncated or corrupt?): {err}") from None
    if METADATA_KEY not in metadata:
        raise SpriteDiffError(f"{path} is not a spritediff model (no '{METADATA_KEY}' metadata)")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError:
        raise SpriteDiffError(f"{path} has unreadable spritediff metadata") from None
    if config.get("format") != FORMAT:
        raise SpriteDiffError(f"{path} has format {config.get('format')!r}; this version reads {FORMAT}")
    return config, state


def build_net(net_config: dict, path) -> ContextUnet:
    if net_config.get("arch") != "ContextUnet":
        raise SpriteDiffError(f"{path}: unknown architecture {net_config.get('arch')!r}")
    sizes = {k: int(net_config[k]) for k in ("in_channels", "n_feat", "n_cfeat", "height")}
    return ContextUnet(**sizes)


def load_state(net: torch.nn.Module, state: dict, path) -> None:
    """Strictly load state into net (as float32), naming any keys that are missing, extra or of other shapes."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = [f"{label}: {_names(keys)}" for label, keys in
                (("missing", missing), ("unexpected", extra), ("other shapes", reshaped)) if keys]
    if problems:
        raise SpriteDiffError(f"{path} does not fit {type(net).__name__}: " + "; ".join(problems))
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    net.eval()


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def read_course_state_dict(path: Path) -> dict:
    """A course checkpoint: torch.save(model.state_dict(), path), read without unpickling code."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise SpriteDiffError(f"{path} is not a readable PyTorch state_dict: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpriteDiffError(f"{path} does not hold a state_dict of tensors")
    return state


def model_from_state_dict(state: dict, path: str | None = None) -> SpriteModel:
    """Build a ContextUnet of the sizes the course state_dict implies, with the course schedule."""
    try:
        conv = state["init_conv.conv1.0.weight"]  # (n_feat, in_channels, 3, 3)
        n_cfeat = state["contextembed1.model.0.weight"].shape[1]
        height = 4 * state["up0.0.weight"].shape[-1]
    except KeyError as err:
        raise SpriteDiffError(f"{path} is not a ContextUnet state_dict (no {err.args[0]})") from None
    net = ContextUnet(in_channels=conv.shape[1], n_feat=conv.shape[0], n_cfeat=n_cfeat, height=height)
    load_state(net, state, path)
    classes = COURSE_CLASSES if n_cfeat == len(COURSE_CLASSES) else tuple(f"class{i}" for i in range(n_cfeat))
    info = {"source": "course state_dict", "credit": CREDIT}
    return SpriteModel(net, Schedule.course(), classes, info, path)
