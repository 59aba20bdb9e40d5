"""`spritediff <command>`: sample, convert, train, bench, eval. User errors: one line on stderr, exit 2.

Arguments are checked at the edge, before any work, by the argparse types here and spritediff.specs;
SIGINT and SIGTERM end a run with exit 130 / 143 and leave --out as it was (results are staged beside it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from .denoiser import DEFAULT_GUIDANCE
from .errors import SpriteDiffError
from .fast import PRECISIONS

MAX_NROW = 256  # images per grid row: keeps the GIF (two grids side by side) under GIF's 65,535-pixel width
MAX_GIF_N = 256  # sprites in the GIF at most
NAME_MAX = 255  # bytes in one file name on the usual file systems


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are SpriteDiffErrors: one line ("argument --n: ..."), exit code 2 from main."""

    def error(self, message: str):
        raise SpriteDiffError(f"{message} (see {self.prog} --help)")


def add_model_argument(parser) -> None:
    parser.add_argument("--model", help="a .safetensors model or a course .pth state_dict (default: the shipped model)")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bounded_int(low: int, high: int):
    """An argparse type: an integer in low..high."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def seed_int(text: str) -> int:
    """An argparse type: a seed, 0..2^63-1."""
    from .specs import MAX_SEED

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


def add_sampler_option_arguments(p) -> None:
    """One --option per keyword in spritediff.samplers.OPTIONS (declared once there); values checked there."""
    from .samplers import OPTIONS

    takers: dict = {}
    for sampler, options in OPTIONS.items():
        for key, option in options.items():
            takers.setdefault(key, (option, []))[1].append(sampler)
    for key, (option, samplers) in takers.items():
        names = ", ".join(samplers) if len(samplers) < len(OPTIONS) else "every sampler"
        default = "the sampler's own" if key == "spacing" else option.default
        p.add_argument("--" + key.replace("_", "-"), dest=f"option_{key}", metavar="VALUE",
                       help=f"{option.help}: {option.allowed()} (default {default}; {names})")


def sampler_options(args) -> dict:
    """The sampler options given on the command line, parsed and checked for args.sampler."""
    from .specs import check_sampler, declared_options

    given = {k[len("option_"):]: v for k, v in vars(args).items() if k.startswith("option_") and v is not None}
    declared = declared_options(check_sampler(args.sampler), given)
    try:
        return {key: declared[key].parse(text, "--" + key.replace("_", "-")) for key, text in given.items()}
    except ValueError as err:
        raise SpriteDiffError(str(err)) from None


def add_sample_parser(sub) -> None:
    from .sampling import FRAMES_N, GRID_MAX, MAX_BATCH_SIZE

    p = sub.add_parser("sample", help="sample a model; write grid.png, denoise.gif, samples.npy, run.json",
                       description="Sample a sprite model and write DIR/grid.png (the first sprites), DIR/denoise.gif "
                                   "(x_t beside the predicted x0 at each step, for the first --gif-n sprites), "
                                   "DIR/samples.npy (N,H,H,C uint8, written batch by batch; C = 4 for an RGBA "
                                   "model) and DIR/run.json. An RGBA model's grid.png keeps its transparency and its "
                                   "denoise.gif shows the sprites on a checkerboard. DIR is created (or updated) only "
                                   "when all of them are in place.")
    add_model_argument(p)
    p.add_argument("--sampler", default="ddim", help="ddpm, ddim, or another registered sampler (default: ddim)")
    p.add_argument("--steps", type=_integer, help="sampler steps, any value 1..T (default: ddpm T=500, ddim 20, "
                                                      "few-step solvers 10); one model call each, heun two")
    add_sampler_option_arguments(p)
    p.add_argument("--n", type=positive_int, default=32, help="number of samples (default 32; any n, in batches)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH_SIZE),
                   help=f"samples per model call, 1..{MAX_BATCH_SIZE} (default: 128 on the CPU, 1024 on CUDA)")
    p.add_argument("--seed", type=seed_int, default=0, help="sample i uses noise stream (seed, i); 0..2^63-1 "
                                                            "(default 0)")
    p.add_argument("--context", help="class name, mix like 'hero=1,food=0.6', 'random' or 'none' (default none)")
    p.add_argument("--guidance", type=nonnegative_float, default=DEFAULT_GUIDANCE,
                   help=f"classifier-free guidance weight w >= 0 with a context: (1+w) eps(c) - w eps(0); 0 is the "
                        f"plain conditional model (default {DEFAULT_GUIDANCE}: better precision, recall and class accuracy than 0, see docs/results.md)")
    p.add_argument("--nrow", type=bounded_int(1, MAX_NROW), help=f"images per grid row, 1..{MAX_NROW} (default 8); "
                                                                 f"the grid shows the first {GRID_MAX} sprites")
    p.add_argument("--gif-n", type=bounded_int(1, MAX_GIF_N), default=FRAMES_N,
                   help=f"sprites in denoise.gif, the first ones, 1..{MAX_GIF_N} (default {FRAMES_N})")
    p.add_argument("--no-gif", action="store_true", help="write no denoise.gif (and keep no frames)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:K or auto (default cpu)")
    add_fast_path_arguments(p)
    p.add_argument("--out", required=True, help="output folder: created (with missing parents), or its files of the "
                                                "same names replaced, only once all results are in place")
    p.set_defaults(run=run_sample)


def add_fast_path_arguments(p) -> None:
    """--precision and --eager, shared by sample, bench and eval."""
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32: exact and bit-reproducible; bf16: the net under bf16 autocast (about 2x faster on "
                        "CPUs with AVX-512 BF16 or AMX, same quality: docs/results.md); auto (default): bf16 on such "
                        "a CPU, else fp32")
    p.add_argument("--eager", action="store_true",
                   help="run the net as stored: no BatchNorm folding, channels-last or CUDA graph replay")


def run_sample(args) -> int:
    from numpy.lib.format import open_memmap

    from .checkpoint import load_model
    from .sampling import sample

    out = prepare_out(args.out)
    options = sampler_options(args)
    model = load_model(args.model)
    shape = (args.n, model.net.height, model.net.height, model.net.in_channels)
    check_free_space(out, math.prod(shape), "samples.npy")
    with staged_output(out) as stage:
        images = open_memmap(stage / "samples.npy", mode="w+", dtype=np.uint8, shape=shape)  # filled batch by batch
        result = sample(model, args.sampler, args.steps, args.n, args.context, args.guidance, args.seed,
                        args.device, args.batch_size, frames=0 if args.no_gif else args.gif_n,
                        progress=sys.stderr.isatty(), fast=not args.eager, precision=args.precision,
                        out=images, **options)
        images.flush()
        record = write_sample_pictures(stage, result, model, args)
    print(f"{args.n} samples, {record['sampler']} {record['steps']} steps, NFE {record['nfe']}, "
          f"{record['seconds']:.3f} s ({record['images_per_second']:.1f} images/s) -> {out}")
    return 0


def write_sample_pictures(stage: Path, result, model, args) -> dict:
    """grid.png (the first GRID_MAX sprites), denoise.gif (unless --no-gif) and run.json into stage; the record."""
    from .sampling import GRID_MAX

    record = {**result.settings, "nfe": result.nfe, "seconds": round(result.seconds, 4),
              "images_per_second": round(args.n / max(result.seconds, 1e-9), 2),
              "model": model.path or "default", "credit": model.info.get("credit"),
              "grid_n": min(args.n, GRID_MAX), "gif_n": len(result.frames[0][0]) if result.frames else 0}
    result.grid(args.nrow).save(stage / "grid.png")
    if not args.no_gif:
        result.save_gif(stage / "denoise.gif", args.nrow)
    write_json(stage / "run.json", record)
    return record


def json_text(record, what: str = "record") -> str:
    """record as strict JSON (no NaN or Infinity); a non-finite number is a SpriteDiffError naming its key."""
    try:
        return json.dumps(record, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise SpriteDiffError(f"{what} holds a non-finite number at {_first_nonfinite(record)}; not written") from None


def write_json(path: Path, record) -> None:
    Path(path).write_text(json_text(record, Path(path).name))


def _first_nonfinite(value, where: str = "") -> str:
    """The key path of the first NaN or inf in a JSON-like value ("" when there is none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the top level"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _first_nonfinite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return ""


def prepare_out(path) -> Path:
    """Check, before any work, that the output folder can be made or updated; create nothing.

    out, if it exists, must be a writable folder; otherwise its nearest existing ancestor must be a writable
    folder (missing parents are made only when the results are in place); no name longer than NAME_MAX bytes.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise SpriteDiffError("--out must name a folder, got an empty path")
    out = Path(path)
    too_long = [part for part in out.parts if len(os.fsencode(part)) > NAME_MAX]
    if too_long:
        raise SpriteDiffError(f"cannot write to --out: a name in it is {len(os.fsencode(too_long[0]))} bytes long, "
                              f"at most {NAME_MAX}")
    if out.exists() and not out.is_dir():
        raise SpriteDiffError(f"--out {out} exists and is not a folder")
    folder = out if out.exists() else nearest_existing(out.absolute().parent)
    if not folder.is_dir():
        raise SpriteDiffError(f"cannot write to --out {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SpriteDiffError(f"cannot write to --out {out}: {folder} is not writable")
    return out


def nearest_existing(path: Path) -> Path:
    """path itself or its closest ancestor that exists."""
    return next(p for p in [path, *path.parents] if p.exists())


def check_free_space(out: Path, nbytes: int, what: str) -> None:
    """A user error if out's file system has less than nbytes (plus 1 MB) free for the file `what`."""
    free = shutil.disk_usage(nearest_existing(out.absolute())).free
    if nbytes + 2**20 > free:
        raise SpriteDiffError(f"--out: {what} needs {nbytes / 1e9:.3g} GB but only {free / 1e9:.3g} GB are free")


class staged_output:
    """A hidden staging folder to write results into: inside out if it exists, else in out's nearest existing
    parent. On success the files move into out (a new out and its missing parents are created then, out by
    renaming the stage); on any failure or interrupt the stage is removed and out is exactly as it was."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def __enter__(self) -> Path:
        try:  # inside an existing out (the same file system as its files), else beside the out to be made
            home = self.out if self.out.is_dir() else nearest_existing(self.out.absolute().parent)
            self.stage = Path(tempfile.mkdtemp(prefix=".spritediff-stage-", dir=home))
        except OSError as err:
            raise SpriteDiffError(f"cannot write to --out {self.out}: {err.strerror or err}") from None
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)
        if exc_type is not None and issubclass(exc_type, OSError):  # e.g. the disk filled up while writing
            raise SpriteDiffError(f"cannot write to --out {self.out}: {exc.strerror or exc}") from None

    def _commit(self) -> None:
        raise_if_stopped()
        try:
            if not self.out.exists():
                self.out.parent.mkdir(parents=True, exist_ok=True)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.stage, 0o777 & ~umask)  # mkdtemp makes it owner-only; out is like any new folder
                os.rename(self.stage, self.out)
                return
            for item in self.stage.iterdir():
                os.replace(item, self.out / item.name)
        except OSError as err:
            raise SpriteDiffError(f"cannot write to --out {self.out}: {err.strerror or err}") from None


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a course .pth state_dict to a .safetensors model",
                       description="Read a course checkpoint (torch.save(model.state_dict(), ...)) without "
                                   "unpickling code and write a spritediff .safetensors model.")
    p.add_argument("source", help="course .pth file (or a .safetensors model)")
    p.add_argument("target", help="output .safetensors file, in an existing folder")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    p.set_defaults(run=run_convert)


def run_convert(args) -> int:
    import torch

    from .checkpoint import load_model, model_out_path, save_model

    target = model_out_path(args.target, "target")
    model = load_model(args.source)
    save_model(model, target, torch.float16 if args.fp16 else torch.float32)
    print(f"wrote {args.target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="spritediff", description="Diffusion models on 16x16 sprites: sample, train, benchmark, evaluate. "
                                       "Sprites by ElvGames, FrootsnVeggies and kyrise.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def add_train_parser(sub) -> None:
    from .train import COURSE_STEPS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a sprite model (resumable; torchrun for several processes)",
                       description="Train a ContextUnet with the course's recipe (correct noise formula) plus an EMA "
                                   "of the weights, which is what the saved model holds. Writes OUT (.safetensors), "
                                   "OUT's .train.pt (resumable state) and .log.jsonl beside it. Several processes: "
                                   "torchrun --nproc_per_node=K -m spritediff train ...")
    p.add_argument("--data", required=True, help="(N,H,H,3) RGB or (N,H,H,4) RGBA uint8 .npy (e.g. the course's "
                                                 "sprites file), or a folder of images: one subfolder per class, or "
                                                 "the images themselves (no classes); H a multiple of 4 from 8 to 64")
    p.add_argument("--channels", choices=("auto", 3, 4), default="auto",
                   type=lambda text: int(text) if text in ("3", "4") else text,
                   help="auto (default): an array keeps its own; a folder is RGBA if any pixel of any image is not "
                        "fully opaque (its opaque images then get alpha 255), else RGB. 3: RGB, transparency "
                        "flattened onto black. 4: RGBA, alpha 255 where an image has none. A fully transparent "
                        "pixel's invisible colour is stored as black")
    p.add_argument("--labels", help="(N,K) one-hot .npy for a context model (the course's labels file)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help=f"optimizer steps (default {COURSE_STEPS}: the course's "
                                                           "32 epochs of 89,400 images at batch 100)")
    length.add_argument("--epochs", type=positive_float, help="passes over the given data instead of --steps")
    p.add_argument("--batch", type=positive_int, default=d.batch, help=f"global batch size (default {d.batch})")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help=f"Adam learning rate, decayed linearly to 0 (default {d.lr})")
    p.add_argument("--n-feat", type=positive_int, default=d.n_feat, help=f"U-Net width (default {d.n_feat})")
    p.add_argument("--context-drop", type=finite_float, default=d.context_drop,
                   help=f"probability of training a sample without its context (default {d.context_drop})")
    p.add_argument("--ema", type=finite_float, default=d.ema, help=f"EMA decay of the saved weights (default {d.ema})")
    p.add_argument("--seed", type=seed_int, default=d.seed,
                   help=f"seed of weights, data order and noise, 0..2^63-1 (default {d.seed})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=d.precision,
                   help="fp32 (default, bit-reproducible) or bf16: autocast forward pass and channels-last weights, "
                        "about 2x faster on CPUs with AVX-512 BF16 (docs/default_model.md)")
    p.add_argument("--ckpt-every", type=positive_int, default=1000, help="checkpoint every N steps (default 1000)")
    p.add_argument("--fp32", action="store_true", help="store the model in float32 (default float16)")
    p.add_argument("--snapshots", type=step_list, default=(),
                   help="steps at which to also keep the EMA and raw weights, e.g. 500,1000,2000 "
                        "(OUT-step500.safetensors, OUT-step500-raw.safetensors)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from OUT's .train.pt checkpoint (without --steps: to the run's own end); a "
                            "finished run continues to a larger --steps, its learning rate decaying over the new total")
    start.add_argument("--overwrite", action="store_true",
                       help="replace an existing run at OUT (its model, .train.pt and .log.jsonl); without it "
                            "train refuses to start over an existing run")
    p.set_defaults(run=run_train)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def step_list(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected steps like 500,1000,2000, got {text!r}") from None
    if any(step < 1 for step in steps):
        raise argparse.ArgumentTypeError(f"steps must be at least 1, got {text!r}")
    return steps


def run_train(args) -> int:
    import torch

    from .checkpoint import model_out_path
    from .data import load_data
    from .sampling import resolve_device
    from .train import TrainConfig, check_run_files, run_training

    out = model_out_path(args.out)
    check_run_files(out, args.resume, args.overwrite)
    device = resolve_device(args.device)
    data = load_data(args.data, args.labels, args.channels)
    steps = train_steps(args, len(data), out)
    config = TrainConfig(steps=steps, batch=args.batch, lr=args.lr, n_feat=args.n_feat,
                         context_drop=args.context_drop, ema=args.ema, seed=args.seed,
                         precision=args.precision)
    model = run_training(config, data, out, device, args.ckpt_every, args.resume,
                         progress=sys.stderr.isatty(), data_name=Path(args.data).name,
                         dtype=torch.float32 if args.fp32 else torch.float16, snapshots=args.snapshots,
                         overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {out} after {model.info['steps_done']} steps ({model.info['wall_seconds']} s)")
    return 0


def train_steps(args, n_images: int, out: Path) -> int:
    """--steps, else ceil(--epochs * N / --batch), else on --resume the run's own total, else COURSE_STEPS."""
    from .train import COURSE_STEPS, MAX_STEPS, checkpoint_steps

    if args.steps:
        steps = args.steps
    elif args.epochs:
        steps = math.ceil(args.epochs * n_images / args.batch)
    else:
        steps = checkpoint_steps(out) if args.resume else COURSE_STEPS
    if steps > MAX_STEPS:
        raise SpriteDiffError(f"--steps (or --epochs) asks for {steps} steps; at most {MAX_STEPS}")
    return steps


from .bench import add_bench_parser  # noqa: E402 (bench imports nothing from cli at import time)
from .evaluate import add_eval_parser  # noqa: E402 (nor do evaluate and features)
from .features.cli import add_train_features_parser  # noqa: E402
from .latent_cli import add_edit_parser, add_interpolate_parser, add_invert_parser  # noqa: E402
from .serve.cli import add_serve_parser  # noqa: E402 (imports no web module until `serve` runs)

COMMANDS = [add_sample_parser, add_convert_parser, add_train_parser, add_bench_parser, add_train_features_parser,
            add_eval_parser, add_invert_parser, add_interpolate_parser, add_edit_parser, add_serve_parser]


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that staging folders are cleaned up as on Ctrl-C."""


STOP = {"signal": None}  # the SIGINT or SIGTERM received during this main(), if any


def _on_signal(signum, frame):
    """Remember the signal (staged_output refuses to commit after one, even if a library swallowed the
    exception, as a C extension's import can) and raise KeyboardInterrupt or Terminated."""
    STOP["signal"] = signum
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def raise_if_stopped() -> None:
    """Raise again the interrupt of a signal received earlier in this run (see _on_signal)."""
    if STOP["signal"] is not None:
        raise KeyboardInterrupt() if STOP["signal"] == signal.SIGINT else Terminated()


def _install_signal_handlers() -> dict:
    """SIGTERM, and SIGINT unless it is ignored or handled by someone else, to _on_signal; the old handlers."""
    STOP["signal"] = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_signal)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)
    return previous


def main(argv: list[str] | None = None) -> int:
    previous = _install_signal_handlers()
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except SpriteDiffError as err:
        print(f"spritediff: error: {' '.join(str(err).split(chr(10)))}", file=sys.stderr)  # one line, always
        return 2
    except KeyboardInterrupt:
        print("spritediff: interrupted; --out left as it was", file=sys.stderr)
        return 130
    except Terminated:
        print("spritediff: terminated; --out left as it was", file=sys.stderr)
        return 143
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
