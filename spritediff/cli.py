"""`spritediff <command>`: sample, convert, train, bench, eval. User errors: one line on stderr, exit 2.

Arguments are checked at the edge, before any work, by the argparse types in spritediff.arguments and by
spritediff.specs;
SIGINT and SIGTERM end a run with exit 130 / 143 and leave --out as it was (results are staged beside it).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from .arguments import (add_device_argument, add_fast_path_arguments, add_model_argument, bounded_int, duration,
                        finite_float, integer, nonnegative_float, positive_float, positive_int, seed_int, step_list)
from .bench import add_bench_parser
from .denoiser import DEFAULT_GUIDANCE
from .errors import SpriteDiffError
from .evaluate import add_eval_parser
from .features.cli import add_train_features_parser
from .interrupts import Terminated, install_signal_handlers
from .latent_cli import add_edit_parser, add_interpolate_parser, add_invert_parser
from .outputs import check_free_space, model_out_path, prepare_out, staged_output, write_json
from .serve.cli import add_serve_parser  # imports no web module until `serve` runs
from .sprites import credit_record

MAX_NROW = 256  # images per grid row: keeps the GIF (two grids side by side) under GIF's 65,535-pixel width
MAX_GIF_N = 256  # sprites in the GIF at most


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are SpriteDiffErrors: one line ("argument --n: ..."), exit code 2 from main."""

    def error(self, message: str):
        raise SpriteDiffError(f"{message} (see {self.prog} --help)")


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


DEFAULT_SAMPLER, DEFAULT_STEPS = "ddpm", 50  # sample's own default (the Python API's is ddim)


def sampler_choice(args) -> tuple[str, int | None, dict]:
    """The sampler, its steps (None: its default) and its options from --sampler (a name or a spec such as
    ddim:20:eta=1), --steps and the option flags, parsed and checked; a spec and a flag may not both set one."""
    from .specs import check_sampler, declared_options, read_sampler_spec

    given = {k[len("option_"):]: v for k, v in vars(args).items() if k.startswith("option_") and v is not None}
    spec = args.sampler or DEFAULT_SAMPLER
    if ":" in spec:
        name, steps, options = read_sampler_spec(spec)
    else:
        name, steps, options = check_sampler(spec), None, {}
    if steps is not None and args.steps is not None:
        raise SpriteDiffError(f"--steps {args.steps} and --sampler {args.sampler} both set the steps; give one")
    for key in given.keys() & options.keys():
        flag = "--" + key.replace("_", "-")
        raise SpriteDiffError(f"{flag} {given[key]} and --sampler {args.sampler} both set {key}; give one")
    declared = declared_options(name, given)
    try:
        options.update({key: declared[key].parse(text, "--" + key.replace("_", "-")) for key, text in given.items()})
    except ValueError as err:
        raise SpriteDiffError(str(err)) from None
    return name, args.steps if steps is None else steps, options


def add_sample_parser(sub) -> None:
    from .samplers import SAMPLERS
    from .sampling import FRAMES_N, GRID_MAX, MAX_BATCH_SIZE

    p = sub.add_parser("sample", help="sample a model; write grid.png, denoise.gif, samples.npy, run.json",
                       description="Sample a sprite model and write DIR/grid.png (the first sprites), DIR/denoise.gif "
                                   "(x_t beside the predicted x0 at each step, for the first --gif-n sprites), "
                                   "DIR/samples.npy (N,H,H,C uint8, written batch by batch; C = 4 for an RGBA "
                                   "model) and DIR/run.json. An RGBA model's grid.png keeps its transparency and its "
                                   "denoise.gif shows the sprites on a checkerboard. DIR is created (or updated) only "
                                   "when all of them are in place.")
    add_model_argument(p)
    p.add_argument("--sampler", metavar="SAMPLER",
                   help=f"a sampler, {', '.join(SAMPLERS)}, or a spec as in bench, e.g. ddim:20:eta=1 or "
                        f"dpmpp-3m:lower_order_final=1; steps and options go in the spec or in their flags, not "
                        f"both (default: {DEFAULT_SAMPLER} with {DEFAULT_STEPS} steps, which draws cleaner sprites "
                        f"than DDIM-20 from the default model, see docs/default_model.md; ddim is the fast, "
                        f"deterministic one)")
    p.add_argument("--steps", type=integer, help=f"sampler steps, any value 1..T (default: {DEFAULT_STEPS} without "
                                                 f"--sampler; ddpm T=500, ddim 20, few-step solvers 10); one model "
                                                 f"call each, heun two")
    add_sampler_option_arguments(p)
    p.add_argument("--n", type=positive_int, default=32, help="number of samples (default 32; any n, in batches)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH_SIZE),
                   help=f"samples per model call, 1..{MAX_BATCH_SIZE} (default: 128 on the CPU, 1024 on CUDA)")
    p.add_argument("--seed", type=seed_int, default=0, help="sample i uses noise stream (seed, i); 0..2^63-1 "
                                                            "(default 0)")
    p.add_argument("--context", help="class name, blend like 'hero=1,food=0.6', 'random' (each sprite a class, all "
                                     "equally likely), 'mix' (each sprite a class drawn with the training set's class "
                                     "shares, stored in the model) or 'none' (the unconditional model); default: mix "
                                     "where the model stores its class mix (the default model does), else none")
    p.add_argument("--guidance", type=nonnegative_float, default=DEFAULT_GUIDANCE,
                   help=f"classifier-free guidance weight w >= 0 with a context: (1+w) eps(c) - w eps(0); 0 is the "
                        f"plain conditional model, nearly twice as fast (default {DEFAULT_GUIDANCE}: better precision "
                        f"and class accuracy than 0, worse FD; see docs/results.md)")
    p.add_argument("--nrow", type=bounded_int(1, MAX_NROW), help=f"images per grid row, 1..{MAX_NROW} (default 8); "
                                                                 f"the grid shows the first {GRID_MAX} sprites")
    p.add_argument("--gif-n", type=bounded_int(1, MAX_GIF_N), default=FRAMES_N,
                   help=f"sprites in denoise.gif, the first ones, 1..{MAX_GIF_N} (default {FRAMES_N})")
    p.add_argument("--no-gif", action="store_true", help="write no denoise.gif (and keep no frames)")
    add_device_argument(p)
    add_fast_path_arguments(p)
    p.add_argument("--out", required=True, help="output folder: created (with missing parents), or its files of the "
                                                "same names replaced, only once all results are in place")
    p.set_defaults(run=run_sample)


def run_sample(args) -> int:
    from numpy.lib.format import open_memmap

    from .checkpoint import load_model
    from .sampling import sample
    from .specs import read_sampler_spec

    out = prepare_out(args.out)
    sampler, steps, options = sampler_choice(args)
    model = load_model(args.model)
    if args.sampler and ":" in args.sampler:
        read_sampler_spec(args.sampler, model.schedule.T)  # the spec's steps against the model's T
    if args.sampler is None and steps is None:
        steps = min(DEFAULT_STEPS, model.schedule.T)
    shape = (args.n, model.net.height, model.net.height, model.net.in_channels)
    check_free_space(out, math.prod(shape), "samples.npy")
    context, context_note = default_context(args.context, model)
    if context_note:
        print(f"spritediff: note: {context_note}", file=sys.stderr)
    with staged_output(out) as stage:
        images = open_memmap(stage / "samples.npy", mode="w+", dtype=np.uint8, shape=shape)  # filled batch by batch
        result = sample(model, sampler, steps, args.n, context, args.guidance, args.seed,
                        args.device, args.batch_size, frames=0 if args.no_gif else args.gif_n,
                        progress=sys.stderr.isatty(), fast=not args.eager, precision=args.precision,
                        out=images, **options)
        images.flush()
        record = write_sample_pictures(stage, result, model, args, context_note)
    print(f"{args.n} samples, {record['sampler']} {record['steps']} steps, NFE {record['nfe']}, "
          f"{record['seconds']:.3f} s ({record['images_per_second']:.1f} images/s) -> {out}")
    return 0


def default_context(context: str | None, model) -> tuple[str | None, str | None]:
    """--context as given; without it "mix" for a model that stores its training class mix (then n sprites have
    the training set's classes in its proportions: p(x) = sum_c p(c) p(x | c)), else no context. The second value
    says why a course checkpoint samples without a context (None otherwise), for stderr and run.json."""
    if context is not None:
        return context, None
    if model.class_mix is not None:
        return "mix", None
    if not model.path or Path(model.path).suffix not in (".pth", ".pt"):  # trained here without labels: no classes
        return None, None
    note = (f"{Path(model.path).name}, a course checkpoint, stores no training class mix, so without "
            f"--context it samples its unconditional path, which draws worse sprites than its classes do; "
            f"--context random (or a blend such as 'hero=1,food=0.5') samples through them")
    return None, note


def write_sample_pictures(stage: Path, result, model, args, context_note: str | None = None) -> dict:
    """grid.png (the first GRID_MAX sprites), denoise.gif (unless --no-gif) and run.json into stage; the record."""
    from .sampling import GRID_MAX

    record = {**result.settings, "nfe": result.nfe, "seconds": round(result.seconds, 4),
              "images_per_second": round(args.n / max(result.seconds, 1e-9), 2),
              "model": model.path or "default", **credit_record(model.info),
              "grid_n": min(args.n, GRID_MAX), "gif_n": len(result.frames[0][0]) if result.frames else 0}
    if context_note:
        record["context_note"] = context_note
    result.grid(args.nrow).save(stage / "grid.png")
    if not args.no_gif:
        result.save_gif(stage / "denoise.gif", args.nrow)
    write_json(stage / "run.json", record)
    return record


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

    from .checkpoint import load_model, save_model

    target = model_out_path(args.target, "target")
    model = load_model(args.source)
    save_model(model, target, torch.float16 if args.fp16 else torch.float32)
    print(f"wrote {args.target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="spritediff", description="Diffusion models on 16x16 sprites: sample, train, benchmark, evaluate. "
                                       "Sprites by ElvGames, FrootsnVeggies and kyrise.")
    parser.add_argument("--version", action="version", version=f"spritediff {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def package_version() -> str:
    """spritediff's version from its installed package metadata ("unknown" when it is not installed)."""
    try:
        return version("spritediff")
    except PackageNotFoundError:
        return "unknown"


def add_train_parser(sub) -> None:
    from .train import COURSE_STEPS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a sprite model (resumable; torchrun for several processes)",
                       description="Train a ContextUnet with the course's recipe (correct noise formula) plus an EMA "
                                   "of the weights (warmed up), which is what the saved model holds. Writes OUT "
                                   "(.safetensors), OUT's .train.pt (resumable state) and .log.jsonl beside it. "
                                   "Several processes: torchrun --nproc_per_node=K -m spritediff train ...")
    p.add_argument("--data", required=True, help="(N,H,H,3) RGB or (N,H,H,4) RGBA uint8 .npy (e.g. the course's "
                                                 "sprites file), or a folder of images: one subfolder per class, or "
                                                 "the images themselves (no classes); H a multiple of 4 from 8 to 64")
    p.add_argument("--channels", choices=("auto", 3, 4), default="auto",
                   type=lambda text: int(text) if text in ("3", "4") else text,
                   help="auto (default): an array keeps its own; a folder is RGBA if any pixel of any image is not "
                        "fully opaque (its opaque images then get alpha 255), else RGB. 3: RGB, transparency "
                        "flattened onto black. 4: RGBA, alpha 255 where an image has none. A fully transparent "
                        "pixel's invisible colour is stored as black")
    p.add_argument("--labels", help="(N,K) one-hot .npy for a context model: the course's labels file gives its "
                   "five class names (hero, non-hero, food, spell, side-facing); any other file names its K "
                   "columns class0 .. classK-1")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help=f"optimizer steps (default {COURSE_STEPS}: the course's "
                                                           "32 epochs of 89,400 images at batch 100)")
    length.add_argument("--epochs", type=positive_float, help="passes over the given data instead of --steps")
    length.add_argument("--time", type=duration, metavar="SPAN",
                        help="train for a wall-clock budget such as 30m, 1h or 1h30m instead of --steps: a few steps "
                             "are timed on this machine, the run gets as many as fit, and its learning-rate decay "
                             "and EMA are fitted to that length (recorded in the model; one process only)")
    p.add_argument("--batch", type=positive_int, default=d.batch, help=f"global batch size (default {d.batch})")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help=f"Adam learning rate, decayed linearly to 0 (default {d.lr})")
    p.add_argument("--lr-decay-steps", type=positive_int, default=None, metavar="N",
                   help="the linear decay reaches 0 at step N, at or past the run's end (default: at its end); "
                        "larger, the run stops before the learning rate is annealed, as in a run cut short by a "
                        "time limit")
    p.add_argument("--n-feat", type=positive_int, default=d.n_feat, help=f"U-Net width (default {d.n_feat})")
    p.add_argument("--context-drop", type=finite_float, default=d.context_drop,
                   help=f"probability of training a sample without its context (default {d.context_drop})")
    p.add_argument("--ema", type=finite_float, default=d.ema, help=f"EMA decay of the saved weights (default {d.ema})")
    p.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=d.ema_warmup,
                   help="warm the EMA up (default): decay min(--ema, (1 + n) / (10 + n)) after n steps, so that a "
                        "short run's saved weights do not still carry its first ones (without it 13%% of the average "
                        "is the step-1 weights after 2,000 steps at decay 0.999; docs/default_model.md). "
                        "--no-ema-warmup: the fixed decay, as in runs made before this option existed (resume "
                        "those with it)")
    p.add_argument("--seed", type=seed_int, default=d.seed,
                   help=f"seed of weights, data order and noise, 0..2^63-1 (default {d.seed})")
    add_device_argument(p)
    p.add_argument("--precision", choices=["fp32", "bf16"], default=d.precision,
                   help="fp32 (default, bit-reproducible) or bf16: autocast forward pass and channels-last weights, "
                        "1.6-2x faster a step on CPUs with AVX-512 BF16, the same loss curve (docs/results.md)")
    p.add_argument("--prediction", choices=["eps", "x0", "v"], default=d.prediction,
                   help="what the net learns to predict: eps (default, the noise), x0 (the clean image) or v "
                        "(sqrt(ab) eps - sqrt(1-ab) x0); stored in the model, every sampler reads it")
    p.add_argument("--min-snr-gamma", type=nonnegative_float, default=d.min_snr_gamma,
                   help="Min-SNR-gamma loss weighting (Hang et al. 2023): each sample's loss weighted so that its "
                        "weight in x0 terms is min(SNR, gamma); 5 is the paper's choice; 0 (default) is the course's "
                        "plain MSE")
    p.add_argument("--input-perturbation", type=nonnegative_float, default=d.input_perturbation, metavar="GAMMA",
                   help="input perturbation (DDPM-IP, Ning et al. 2023): the net's input x_t is built from noise + "
                        "GAMMA xi (xi fresh Gaussian noise) while its target keeps the noise, so training sees inputs "
                        "as far off the forward process as sampling's own steps; 0.1 is the paper's choice; 0 "
                        "(default) off")
    p.add_argument("--init", metavar="MODEL", default=d.init,
                   help="fine-tune: start from MODEL's weights (a .safetensors or course .pth; 'default': the shipped "
                        "model) instead of fresh ones from --seed; the net must match --n-feat and the data, and the "
                        "optimizer and learning rate start afresh. Resume such a run with the same --init")
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


def run_train(args) -> int:
    import torch

    from .data import load_data
    from .sampling import resolve_device
    from .train import TrainConfig, check_run_files, fit_to_time, run_training

    out = model_out_path(args.out)
    check_run_files(out, args.resume, args.overwrite)
    if args.time and (args.resume or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise SpriteDiffError("--time chooses a new run's length in one process; resume with --resume alone, "
                              "and under torchrun give --steps")
    device = resolve_device(args.device)
    data = load_data(args.data, args.labels, args.channels)
    steps = train_steps(args, len(data), out)
    config = TrainConfig(steps=steps, batch=args.batch, lr=args.lr, n_feat=args.n_feat,
                         context_drop=args.context_drop, ema=args.ema, ema_warmup=args.ema_warmup, seed=args.seed,
                         precision=args.precision, prediction=args.prediction, min_snr_gamma=args.min_snr_gamma,
                         input_perturbation=args.input_perturbation, lr_decay_steps=args.lr_decay_steps or 0, init=args.init)
    record = None
    if args.time:
        config, record = fit_to_time(config, data, device, args.time)
        print(f"--time {args.time:g} s: {config.steps} steps at {record['probe_seconds_per_step']} s a step, "
              f"EMA decay {config.ema}", file=sys.stderr)
    model = run_training(config, data, out, device, args.ckpt_every, args.resume,
                         progress=sys.stderr.isatty(), data_name=Path(args.data).name,
                         dtype=torch.float32 if args.fp32 else torch.float16, snapshots=args.snapshots,
                         overwrite=args.overwrite, record=record)
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


def what_was_kept(args) -> str:
    """What a stopped command leaves behind: train keeps its last checkpoint (and the model written with it); every
    other command writes --out only once everything succeeded."""
    if args is None or getattr(args, "run", None) is not run_train:
        return "--out left as it was"
    from .train import read_state, state_path

    state = state_path(model_out_path(args.out))
    if not state.is_file():
        return "no checkpoint was written yet, nothing is left of this run"
    try:
        step = read_state(state)["step"]
    except SpriteDiffError:
        return f"the run's last checkpoint is {state}"
    return f"the run is kept as of its last checkpoint, step {step} ({state}, and {args.out} from it); --resume goes on"


COMMANDS = [add_sample_parser, add_convert_parser, add_train_parser, add_bench_parser, add_train_features_parser,
            add_eval_parser, add_invert_parser, add_interpolate_parser, add_edit_parser, add_serve_parser]


def main(argv: list[str] | None = None) -> int:
    previous = install_signal_handlers()
    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except SpriteDiffError as err:
        print(f"spritediff: error: {' '.join(str(err).split(chr(10)))}", file=sys.stderr)  # one line, always
        return 2
    except KeyboardInterrupt:
        print(f"spritediff: interrupted; {what_was_kept(args)}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"spritediff: terminated; {what_was_kept(args)}", file=sys.stderr)
        return 143
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
