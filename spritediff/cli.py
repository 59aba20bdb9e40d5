"""`spritediff <command>`: sample, convert, train, bench, eval. User errors: one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .denoiser import DEFAULT_GUIDANCE
from .errors import SpriteDiffError


def add_model_argument(parser) -> None:
    parser.add_argument("--model", help="a .safetensors model or a course .pth state_dict (default: the shipped model)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="sample a model; write grid.png, denoise.gif, samples.npy, run.json",
                       description="Sample a sprite model and write DIR/grid.png, DIR/denoise.gif (x_t beside the "
                                   "predicted x0 at each step), DIR/samples.npy (N,16,16,3 uint8) and DIR/run.json.")
    add_model_argument(p)
    p.add_argument("--sampler", default="ddim", help="ddpm, ddim, or another registered sampler (default: ddim)")
    p.add_argument("--steps", type=int, help="sampler steps, any value 1..T (default: ddpm T=500, ddim 20, "
                                                   "few-step solvers 10); one model call each, heun two")
    p.add_argument("--eta", type=float, help="DDIM noise: 0 deterministic (default), 1 DDPM-like")
    p.add_argument("--variance", choices=["course", "posterior"], help="DDPM noise: course b_t (default) or posterior")
    p.add_argument("--spacing", help="timestep grid: trailing, leading, linspace, quadratic, logsnr, karras "
                                             "(default: the sampler's own, see docs/solvers.md)")
    p.add_argument("--n", type=int, default=32, help="number of samples (default 32)")
    p.add_argument("--batch-size", type=positive_int, help="samples per model call (default: all n at once)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses noise stream (seed, i) (default 0)")
    p.add_argument("--context", help="class name, mix like 'hero=1,food=0.6', 'random' or 'none' (default none)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help=f"classifier-free guidance weight w with a context: (1+w) eps(c) - w eps(0); 0 is the plain "
                        f"conditional model (default {DEFAULT_GUIDANCE}, the best FD in docs/results.md)")
    p.add_argument("--nrow", type=positive_int, help="images per grid row (default 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--eager", action="store_true",
                   help="on CUDA, skip the fast path (BatchNorm folding, CUDA graph replay)")
    p.add_argument("--out", required=True, help="output folder (created; existing files of the same names replaced)")
    p.set_defaults(run=run_sample)


def sampler_options(args) -> dict:
    return {k: getattr(args, k) for k in ("eta", "variance", "spacing") if getattr(args, k) is not None}


def run_sample(args) -> int:
    from .checkpoint import load_model
    from .sampling import sample

    out = prepare_out(args.out)
    model = load_model(args.model)
    result = sample(model, args.sampler, args.steps, args.n, args.context, args.guidance, args.seed,
                    args.device, args.batch_size, frames=True, progress=sys.stderr.isatty(),
                    fast=False if args.eager else None, **sampler_options(args))
    record = {**result.settings, "nfe": result.nfe, "seconds": round(result.seconds, 4),
              "images_per_second": round(args.n / result.seconds, 2), "model": model.path or "default",
              "credit": model.info.get("credit")}
    with staged_output(out) as stage:
        result.grid(args.nrow).save(stage / "grid.png")
        result.save_gif(stage / "denoise.gif", args.nrow)
        np.save(stage / "samples.npy", result.images)
        (stage / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.n} samples, {result.settings['sampler']} {result.settings['steps']} steps, NFE {result.nfe}, "
          f"{result.seconds:.3f} s ({args.n / result.seconds:.1f} images/s) -> {out}")
    return 0


def prepare_out(path: str) -> Path:
    """Check that the output folder can be made and written, before any work is done."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise SpriteDiffError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".spritediff-probe-")
        probe.close()
    except OSError as err:
        raise SpriteDiffError(f"cannot write to --out {out}: {err.strerror or err}") from None
    return out


class staged_output:
    """Write files into a hidden staging folder inside out; move them into out only if all succeed."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.stage = Path(tempfile.mkdtemp(prefix=".spritediff-stage-", dir=self.out))
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for item in self.stage.iterdir():
                    os.replace(item, self.out / item.name)
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a course .pth state_dict to a .safetensors model",
                       description="Read a course checkpoint (torch.save(model.state_dict(), ...)) without "
                                   "unpickling code and write a spritediff .safetensors model.")
    p.add_argument("source", help="course .pth file")
    p.add_argument("target", help="output .safetensors file")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size)")
    p.set_defaults(run=run_convert)


def run_convert(args) -> int:
    import torch

    from .checkpoint import load_model, save_model

    model = load_model(args.source)
    save_model(model, args.target, torch.float16 if args.fp16 else torch.float32)
    print(f"wrote {args.target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    p.add_argument("--data", required=True, help="(N,H,H,3) uint8 .npy (the course's sprites file or the base set), "
                                                 "or a folder with one subfolder of images per class")
    p.add_argument("--labels", help="(N,K) one-hot .npy for a context model (the course's labels file)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help=f"optimizer steps (default {COURSE_STEPS}: the course's "
                                                           "32 epochs of 89,400 images at batch 100)")
    length.add_argument("--epochs", type=float, help="passes over the given data instead of --steps")
    p.add_argument("--batch", type=positive_int, default=d.batch, help=f"global batch size (default {d.batch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate, decayed linearly to 0 (default {d.lr})")
    p.add_argument("--n-feat", type=positive_int, default=d.n_feat, help=f"U-Net width (default {d.n_feat})")
    p.add_argument("--context-drop", type=float, default=d.context_drop,
                   help=f"probability of training a sample without its context (default {d.context_drop})")
    p.add_argument("--ema", type=float, default=d.ema, help=f"EMA decay of the saved weights (default {d.ema})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of weights, data order and noise (default {d.seed})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--ckpt-every", type=positive_int, default=1000, help="checkpoint every N steps (default 1000)")
    p.add_argument("--fp32", action="store_true", help="store the model in float32 (default float16)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's .train.pt checkpoint")
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    import math

    import torch

    from .checkpoint import model_out_path
    from .data import load_data
    from .sampling import resolve_device
    from .train import COURSE_STEPS, TrainConfig, run_training

    out = model_out_path(args.out)
    data = load_data(args.data, args.labels)
    steps = args.steps or (math.ceil(args.epochs * len(data) / args.batch) if args.epochs else COURSE_STEPS)
    config = TrainConfig(steps=steps, batch=args.batch, lr=args.lr, n_feat=args.n_feat,
                         context_drop=args.context_drop, ema=args.ema, seed=args.seed)
    model = run_training(config, data, out, resolve_device(args.device), args.ckpt_every, args.resume,
                         progress=sys.stderr.isatty(), data_name=Path(args.data).name,
                         dtype=torch.float32 if args.fp32 else torch.float16)
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {out} after {model.info['steps_done']} steps ({model.info['wall_seconds']} s)")
    return 0


from .bench import add_bench_parser  # noqa: E402 (bench imports nothing from cli at import time)
from .evaluate import add_eval_parser  # noqa: E402 (nor do evaluate and features)
from .features import add_train_features_parser  # noqa: E402

COMMANDS = [add_sample_parser, add_convert_parser, add_train_parser, add_bench_parser, add_train_features_parser,
            add_eval_parser]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SpriteDiffError as err:
        print(f"spritediff: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spritediff: interrupted", file=sys.stderr)
        return 130
