"""Model files: one .safetensors with a JSON config in its metadata; course .pth state_dicts import.

No pickle: safetensors for our files, torch.load(weights_only=True) for the course's .pth.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import SpriteDiffError
from .models import ContextUnet
from .outputs import model_out_path, write_atomically
from .safetensors_io import METADATA_KEY, read_safetensors
from .checks import NORMS, check_prediction_type, shown
from .schedule import Schedule
from .sprites import CREDIT, class_names
from .student import StudentSchedule, read_student

FORMAT = "spritediff/1"
ASSETS = Path(__file__).parent / "assets"
SHIPPED_MODELS = {  # the names load_model and every --model take besides a path (docs/default_model.md)
    "default": ASSETS / "sprites_context.safetensors",  # the context model; what no --model means
    "distilled": ASSETS / "sprites_context_distilled.safetensors",  # its 4-call distilled student (spritediff distill)
}
DEFAULT_MODEL = SHIPPED_MODELS["default"]
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt")


@dataclass
class SpriteModel:
    """A trained net with what it needs to be sampled: its schedule, its context class names and what the net
    predicts (prediction_type: "eps", "x0" or "v"; files without it are "eps")."""

    net: ContextUnet
    schedule: Schedule
    classes: tuple[str, ...]
    info: dict = field(default_factory=dict)  # how it was made (training command, data, credit)
    path: str | None = None  # as the user gave it (a shipped model's name); None for the shipped default model
    prediction_type: str = "eps"  # the net's output: eps, x0 or v (spritediff.denoiser.PREDICTION_TYPES)
    class_mix: tuple[float, ...] | None = None  # each class's share of the training labels, summing to 1
    student: StudentSchedule | None = None  # a distilled student's own grid, sampler and guidance (spritediff.student)

    def config(self) -> dict:
        config = {"format": FORMAT, "net": self.net.config(), "schedule": self.schedule.to_config(),
                  "classes": list(self.classes), "info": self.info, "prediction_type": self.prediction_type}
        if self.class_mix is not None:
            config["class_mix"] = list(self.class_mix)
        if self.student is not None:
            config["student"] = self.student.to_config()
        return config


def save_model(model: SpriteModel, path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> None:
    """Write model to path (a .safetensors name in an existing folder) atomically (temporary file, then rename);
    floats stored as dtype (float32, float16 or bfloat16)."""
    if not isinstance(model, SpriteModel):
        raise SpriteDiffError(f"model must be a SpriteModel, got {type(model).__name__}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise SpriteDiffError(f"dtype must be torch.float32, float16 or bfloat16, got {shown(dtype)}")
    check_prediction_type(model.prediction_type, "model prediction_type")
    if model.class_mix is not None:
        read_class_mix(list(model.class_mix), model.classes, "model")
    if model.student is not None:
        read_student(model.student.to_config(), model.schedule.T, "model")
    path = model_out_path(path, "path")
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.net.state_dict().items()}
    metadata = {METADATA_KEY: json.dumps(model.config(), allow_nan=False)}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_model(path: str | os.PathLike | None = None) -> SpriteModel:
    """Load a .safetensors model, or a course .pth state_dict (by extension), or a shipped model by its name in
    SHIPPED_MODELS ("default", "distilled"). None: the default model."""
    if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(path).strip()):
        raise SpriteDiffError(f"model must be a path to a .safetensors or .pth file, or one of "
                              f"{', '.join(SHIPPED_MODELS)}, got {path!r}")
    name = "default" if path is None else path if isinstance(path, str) and path in SHIPPED_MODELS else None
    path = SHIPPED_MODELS[name] if name else Path(path)
    if path.is_dir():
        raise SpriteDiffError(f"--model {path} is a folder; give a model file (.safetensors, or a course .pth)")
    if not path.is_file():
        hint = f" (the shipped model {name!r} is not installed; pass --model FILE)" if name else ""
        raise SpriteDiffError(f"model file not found: {path}{hint}")
    if path.suffix not in MODEL_SUFFIXES:
        raise SpriteDiffError(f"model file {path} must end in {', '.join(MODEL_SUFFIXES)}, or be one of the shipped "
                              f"models {', '.join(SHIPPED_MODELS)}")
    if path.suffix in (".pth", ".pt"):
        return model_from_state_dict(read_course_state_dict(path), path=str(path))
    config, state = _read_safetensors(path)
    net = build_net(config["net"], path)
    load_state(net, state, path)
    classes = read_classes(config["classes"], net, path)
    schedule = read_schedule(config["schedule"], path)
    return SpriteModel(net, schedule, classes, config["info"], None if name == "default" else name or str(path),
                       check_prediction_type(config.get("prediction_type", "eps"), f"{path}: metadata prediction_type"),
                       read_class_mix(config.get("class_mix"), classes, path),
                       read_student(config.get("student"), schedule.T, path))


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    """A model file's config, its sections checked for type, and its state_dict."""
    config, state = read_safetensors(path, "model", FORMAT)
    for key, kind in (("net", dict), ("schedule", dict), ("classes", list), ("info", dict)):
        if not isinstance(config.setdefault(key, {} if key == "info" else None), kind):
            raise SpriteDiffError(f"{path}: metadata {key!r} is missing or not a JSON {kind.__name__}")
    return config, state


# in_channels: 3 (RGB) or 4 (RGBA, straight alpha as a fourth channel in [-1, 1])
NET_LIMITS = {"in_channels": (3, 4), "n_feat": (8, 1024), "n_cfeat": (0, 1000), "height": (8, 64)}


def build_net(net_config: dict, path) -> ContextUnet:
    """A ContextUnet of the sizes in net_config, each an integer in NET_LIMITS (n_feat a multiple of 8 for GroupNorm,
    height a multiple of 4: the sizes ContextUnet fits)."""
    if not isinstance(net_config, dict) or net_config.get("arch") != "ContextUnet":
        arch = net_config.get("arch") if isinstance(net_config, dict) else None
        raise SpriteDiffError(f"{path}: unknown architecture {shown(arch)}")
    sizes = {}
    for key, (low, high) in NET_LIMITS.items():
        value = net_config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SpriteDiffError(f"{path}: metadata net.{key} must be an integer in {low}..{high}, got {shown(value)}")
        sizes[key] = value
    if sizes["n_feat"] % 8 or sizes["height"] % 4:
        raise SpriteDiffError(f"{path}: metadata n_feat must be a multiple of 8 and height of 4, got {sizes}")
    norm = net_config.get("norm", "batch")  # absent: the course's BatchNorm (files from before the option)
    if norm not in NORMS:
        raise SpriteDiffError(f"{path}: metadata net.norm must be one of {', '.join(NORMS)}, got {shown(norm)}")
    return ContextUnet(**sizes, norm=norm)


def read_schedule(config: dict, path) -> Schedule:
    """The model's linear schedule, its numbers checked: T in 1..10000, 0 < beta_start <= beta_end < 1, and an
    optional terminal_snr above 0 and below the linear schedule's own."""
    T, start, end = (config.get(k) for k in ("T", "beta_start", "beta_end"))
    terminal = config.get("terminal_snr")
    numbers_ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                     for v in (T, start, end, 1.0 if terminal is None else terminal))
    if config.get("kind", "linear") != "linear" or not numbers_ok or not isinstance(T, int) or \
            not 1 <= T <= 10_000 or not 0 < start <= end < 1:
        raise SpriteDiffError(f"{path}: metadata schedule must be linear with T in 1..10000 and "
                              f"0 < beta_start <= beta_end < 1, got {config}")
    try:
        return Schedule.from_config(config)
    except ValueError as err:
        raise SpriteDiffError(f"{path}: metadata schedule: {err}") from None


def read_classes(classes: list, net: ContextUnet, path) -> tuple[str, ...]:
    """The model's class names: distinct non-empty strings, one per context feature of the net."""
    ok = all(isinstance(c, str) and c.strip() and c == c.strip().lower() for c in classes)
    if not ok or len(set(classes)) != len(classes) or len(classes) != net.n_cfeat:
        raise SpriteDiffError(f"{path}: metadata classes must be {net.n_cfeat} distinct lower-case names "
                              f"(one per context feature), got {classes!r}"[:300])
    return tuple(classes)


def read_class_mix(mix, classes: tuple[str, ...], path) -> tuple[float, ...] | None:
    """The training class mix: one finite share >= 0 per class, summing to 1 (within float32 rounding);
    None where the file has none (models trained without labels, or before the mix was stored)."""
    if mix is None:
        return None
    ok = isinstance(mix, list) and len(mix) == len(classes) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in mix)
    if not ok or abs(sum(mix) - 1) > 1e-6:
        raise SpriteDiffError(f"{path}: metadata class_mix must be {len(classes)} shares >= 0 summing to 1 "
                              f"(one per class), got {mix!r}"[:300])
    return tuple(float(v) for v in mix)


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
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise SpriteDiffError(f"{path}: weights hold NaN or inf ({_names(sorted(bad))}); the file is damaged or "
                              f"its run diverged")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    net.eval()


def _names(keys: list[str], limit: int = 4) -> str:
    """The first `limit` keys, one line (a key with a newline or other odd characters is shown as its repr)."""
    shown = ", ".join(k if k.isprintable() else repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def read_course_state_dict(path: Path) -> dict:
    """A course checkpoint: torch.save(model.state_dict(), path), read without unpickling code."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files; its text advises unsafe loading
        raise SpriteDiffError(f"{path} is not a readable course checkpoint: {unreadable_reason(err)}; spritediff "
                              f"reads torch.save(model.state_dict()) files of tensors only, never pickled code") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpriteDiffError(f"{path} does not hold a state_dict of tensors")
    return state


def unreadable_reason(err: Exception) -> str:
    """What torch.load(weights_only=True) found wrong, in our words (never its advice to load unsafely)."""
    text = str(err)
    if "Unsupported global" in text or "GLOBAL " in text:  # a pickled object other than tensors
        return "it holds Python objects besides tensors"
    return "not a PyTorch file, or empty or truncated"


def model_from_state_dict(state: dict, path: str | None = None) -> SpriteModel:
    """Build a ContextUnet of the sizes the course state_dict implies, with the course schedule."""
    try:
        conv = state["init_conv.conv1.0.weight"]  # (n_feat, in_channels, 3, 3)
        sizes = {"in_channels": conv.shape[1], "n_feat": conv.shape[0],
                 "n_cfeat": state["contextembed1.model.0.weight"].shape[1],
                 "height": 4 * state["up0.0.weight"].shape[-1]}
    except KeyError as err:
        raise SpriteDiffError(f"{path} is not a ContextUnet state_dict (no {err.args[0]})") from None
    except IndexError:
        raise SpriteDiffError(f"{path} is not a ContextUnet state_dict (tensors of other shapes)") from None
    net = build_net({"arch": "ContextUnet", **sizes}, path)
    n_cfeat = sizes["n_cfeat"]
    load_state(net, state, path)
    classes = class_names(n_cfeat)
    info = {"source": "course state_dict", "credit": CREDIT}
    return SpriteModel(net, Schedule.course(), classes, info, path)
