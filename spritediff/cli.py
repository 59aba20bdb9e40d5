"""`spritediff <command>`: sample, convert, train, bench, eval. User errors: one line on stderr, exit 2.

Arguments are checked at the edge, before any work, by the argparse types in spritediff.arguments and by
spritediff.specs;
SIGINT and SIGTERM end a run with exit 130 / 143 and leave --out as it was (results are staged beside it).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from contextlib import nullcontext
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .arguments import (add_device_argument, add_fast_path_arguments, add_model_argument, bounded_int, integer,
                        nonnegative_float, positive_int, seed_int)
from .defaults import CLI_SAMPLE, DEFAULT_GUIDANCE, MIX, default_steps
from .errors import ReportedElsewhere, SpriteDiffError
from .interrupts import Terminated, install_signal_handlers
from .launch import launched_rank, launched_size, local_device
from .outputs import check_free_space, model_out_path, prepare_out, staged_output, write_json
from .sprites import credit_record

MAX_NROW = 256  # images per grid row: keeps the GIF (two grids side by side) under GIF's 65,535-pixel width
MAX_GIF_N = 256  # sprites in the GIF at most


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are SpriteDiffErrors: one line ("argument --n: ..."), exit code 2 from main."""

    def error(self, message: str):
        raise SpriteDiffError(f"{message} (see {self.prog} --help)")


def add_sampler_option_arguments(p) -> None:
    """One --option per keyword in spritediff.samplers.REGISTRY (declared once there); values checked there."""
    from .samplers.registry import REGISTRY

    takers: dict = {}
    for sampler, entry in REGISTRY.items():
        for key, option in entry.options.items():
            takers.setdefault(key, (option, []))[1].append(sampler)
    for key, (option, samplers) in takers.items():
        names = ", ".join(samplers) if len(samplers) < len(REGISTRY) else "every sampler"
        default = "the sampler's own" if key == "spacing" else option.default
        p.add_argument("--" + key.replace("_", "-"), dest=f"option_{key}", metavar="VALUE",
                       help=f"{option.help}: {option.allowed()} (default {default}; {names})")


def given_options(args) -> dict:
    """The sampler option flags given (--eta 0.5 -> {"eta": "0.5"}), as text."""
    return {k[len("option_"):]: v for k, v in vars(args).items() if k.startswith("option_") and v is not None}


def sampler_choice(args, default: str = CLI_SAMPLE.sampler) -> tuple[str, int | None, dict]:
    """The sampler, its steps (None: its default) and its options from --sampler (a name or a spec such as
    ddim:20:eta=1), --steps and the option flags, parsed and checked; a spec and a flag may not both set one.
    default: the sampler without --sampler (CLI_SAMPLE's, or a distilled student's own)."""
    from .specs import check_sampler, declared_options, read_sampler_spec

    given = given_options(args)
    spec = args.sampler or default
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
    from .defaults import FRAMES_N, GRID_MAX, MAX_BATCH_SIZE
    from .samplers.registry import REGISTRY

    p = sub.add_parser("sample",
                       description="Sample a sprite model and write DIR/grid.png (the first sprites), DIR/denoise.gif "
                                   "(x_t beside the predicted x0 at each step, for the first --gif-n sprites), "
                                   "DIR/samples.npy (N,H,H,C uint8, written batch by batch; C = 4 for an RGBA "
                                   "model) and DIR/run.json. An RGBA model's grid.png keeps its transparency and its "
                                   "denoise.gif shows the sprites on a checkerboard. DIR is created (or updated) only "
                                   "when all of them are in place.")
    add_model_argument(p)
    p.add_argument("--sampler", metavar="SAMPLER",
                   help=f"a sampler, {', '.join(REGISTRY)}, or a spec as in bench, e.g. ddim:20:eta=1 or "
                        f"dpmpp-3m:lower_order_final=1; steps and options go in the spec or in their flags, not "
                        f"both (default: {CLI_SAMPLE.sampler} with {CLI_SAMPLE.steps} steps, which draws cleaner "
                        f"sprites than DDIM-20 from the default model, see docs/default_model.md; ddim is the fast, "
                        f"deterministic one; a distilled student: its own sampler on its own grid, and no other)")
    p.add_argument("--steps", type=integer,
                   help=f"sampler steps, any value 1..T (default: {CLI_SAMPLE.steps} without --sampler; ddpm T=500, "
                        f"ddim 20, few-step solvers 10); one model call each, heun two")
    add_sampler_option_arguments(p)
    p.add_argument("-n", "--n", type=positive_int, default=32,
                   help="number of samples (default 32; any n, in batches); under torchrun write -n, since torchrun "
                        "reads --n as an abbreviation of its own options")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH_SIZE),
                   help=f"samples per model call, 1..{MAX_BATCH_SIZE} (default: 128 on the CPU, 1024 on CUDA)")
    p.add_argument("--seed", type=seed_int, default=0, help="sample i uses noise stream (seed, i); 0..2^63-1 "
                                                            "(default 0)")
    p.add_argument("--context", help="class name, blend like 'hero=1,food=0.6', 'random' (each sprite a class, all "
                                     "equally likely), 'mix' (each sprite a class drawn with the training set's class "
                                     "shares, stored in the model) or 'none' (the unconditional model); default: mix "
                                     "where the model stores its class mix (the default model does), else none")
    p.add_argument("--guidance", type=nonnegative_float, default=CLI_SAMPLE.guidance,
                   help=f"classifier-free guidance weight w >= 0 with a context: (1+w) eps(c) - w eps(0); 0 is the "
                        f"plain conditional model, nearly twice as fast (default {DEFAULT_GUIDANCE}: better "
                        f"precision and class accuracy than 0, worse FD, see docs/results.md; a distilled student's "
                        f"own weight is in its weights, and it takes no other)")
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
    """Sample; under torchrun each rank draws its share and rank 0 alone writes --out (sharded.py)."""
    if args.sampler is not None or not given_options(args):  # option flags alone: checked against the model's
        on_every_rank(sampler_choice, args)  # default sampler (a student's own) once it is loaded; else before torch

    from .sharded import checked_together, join, leave

    ranks = join()
    with checked_together(ranks):
        out = prepare_out(args.out) if ranks.is_main else None
        model, plan, context_note = _sample_plan(args, out)
    started = time.perf_counter()
    with staged_output(out) if ranks.is_main else nullcontext() as stage:
        result, seconds = _sample_ranks(ranks, model, plan, stage)
        if ranks.is_main:
            record = write_sample_pictures(stage, result, model, args, context_note,
                                           _world_record(ranks, seconds, time.perf_counter() - started))
    leave(ranks)
    if ranks.is_main:
        print(f"{args.n} samples, {record['sampler']} {record['steps']} steps, NFE {record['nfe']}, "
              f"{record['seconds']:.3f} s ({record['images_per_second']:.1f} images/s)"
              f"{_world_note(ranks)} -> {out}")
    return 0


def on_every_rank(check, *args):
    """check(*args), a check that every process of a torchrun job makes alike: its error is printed by rank 0 only."""
    try:
        return check(*args)
    except SpriteDiffError as err:
        if launched_rank() != 0:
            raise ReportedElsewhere(str(err)) from None
        raise


def _sample_plan(args, out: Path | None):
    """The model, the checked SamplePlan of the whole run and the context note (every rank builds the same)."""
    from .checkpoint import load_model
    from .sampling import plan_sample
    from .specs import read_sampler_spec

    model = load_model(args.model)
    student = model.student  # a distilled student samples with its own sampler and grid (spritediff.student)
    sampler, steps, options = sampler_choice(args, CLI_SAMPLE.sampler if student is None else student.sampler)
    if args.sampler and ":" in args.sampler:
        read_sampler_spec(args.sampler, model.schedule.T)  # the spec's steps against the model's T
    if args.sampler is None and steps is None and student is None:
        steps = default_steps(CLI_SAMPLE, sampler, model.schedule.T)
    if out is not None:
        shape = (args.n, model.net.height, model.net.height, model.net.in_channels)
        check_free_space(out, math.prod(shape), "samples.npy")
    context, context_note = default_context(args.context, model)
    if context_note and out is not None:
        print(f"spritediff: note: {context_note}", file=sys.stderr)
    plan = plan_sample(model, sampler, steps, args.n, context, args.guidance, args.seed, local_device(args.device),
                       args.batch_size, 0 if args.no_gif else args.gif_n, not args.eager, args.precision, None,
                       options)
    return model, plan, context_note


def _sample_ranks(ranks, model, plan, stage: Path | None):
    """(result, seconds per rank): this rank's share sampled, rank 0's into stage/samples.npy with every share."""
    import numpy as np
    from numpy.lib.format import open_memmap
    from tqdm import tqdm

    from .engine import total_steps
    from .sharded import sample_across

    images = None
    if ranks.is_main:
        shape = (plan.n, model.net.height, model.net.height, model.net.in_channels)
        images = open_memmap(stage / "samples.npy", mode="w+", dtype=np.uint8, shape=shape)  # filled batch by batch
    show = ranks.is_main and sys.stderr.isatty()
    bar = tqdm(total=-(-total_steps(plan) // ranks.size), unit="step", leave=False) if show else None
    try:
        result, seconds = sample_across(ranks, model, plan, images, bar)
    finally:
        if bar is not None:
            bar.close()
    if images is not None:
        images.flush()
    return result, seconds


def _world_record(ranks, seconds: list[float], wall: float) -> dict:
    """run.json's record of a torchrun job: world size, each rank's sampling seconds, the whole job's wall time."""
    if ranks.size == 1:
        return {}
    return {"world_size": ranks.size, "seconds_per_rank": [round(s, 4) for s in seconds],
            "seconds_total": round(wall, 4)}


def _world_note(ranks) -> str:
    return "" if ranks.size == 1 else f", {ranks.size} processes"


def default_context(context: str | None, model) -> tuple[str | None, str | None]:
    """--context as given; without it CLI_SAMPLE's ("mix") for a model that stores its training class mix (then n
    sprites have the training set's classes in its proportions: p(x) = sum_c p(c) p(x | c)), else no context. The
    second value says why a course checkpoint samples without a context (None otherwise), for stderr and run.json."""
    if context is not None:
        return context, None
    if CLI_SAMPLE.context == MIX and model.class_mix is not None:
        return MIX, None
    if CLI_SAMPLE.context not in (None, MIX):
        return CLI_SAMPLE.context, None
    if not model.path or Path(model.path).suffix not in (".pth", ".pt"):  # trained here without labels: no classes
        return None, None
    note = (f"{Path(model.path).name}, a course checkpoint, stores no training class mix, so without "
            f"--context it samples its unconditional path, which draws worse sprites than its classes do; "
            f"--context random (or a blend such as 'hero=1,food=0.5') samples through them")
    return None, note


def write_sample_pictures(stage: Path, result, model, args, context_note: str | None = None,
                          world: dict | None = None) -> dict:
    """grid.png (the first GRID_MAX sprites), denoise.gif (unless --no-gif) and run.json into stage; the record."""
    from .defaults import GRID_MAX

    record = {**result.settings, "nfe": result.nfe, "seconds": round(result.seconds, 4),
              "images_per_second": round(args.n / max(result.seconds, 1e-9), 2),
              "model": model.path or "default", **credit_record(model.info),
              "grid_n": min(args.n, GRID_MAX), "gif_n": len(result.frames[0][0]) if result.frames else 0}
    if context_note:
        record["context_note"] = context_note
    record.update(world or {})
    result.grid(args.nrow).save(stage / "grid.png")
    if not args.no_gif:
        result.save_gif(stage / "denoise.gif", args.nrow)
    write_json(stage / "run.json", record)
    return record


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert",
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


COMMANDS = [  # name, one-line help, and where its parser builder lives: imported only when needed
    ("sample", "sample a model; write grid.png, denoise.gif, samples.npy, run.json", "spritediff.cli:add_sample_parser"),
    ("convert", "convert a course .pth state_dict to a .safetensors model", "spritediff.cli:add_convert_parser"),
    ("train", "train a sprite model (resumable; torchrun for several processes)",
     "spritediff.train_cli:add_train_parser"),
    ("bench", "time samplers side by side (DDIM against DDPM, and the others)", "spritediff.bench_cli:add_bench_parser"),
    ("train-features", "train the sprite feature net that eval's FD/KID use",
     "spritediff.features.cli:add_train_features_parser"),
    ("eval", "FD/KID of samplers against real sprites; quality against NFE and seconds",
     "spritediff.evaluate:add_eval_parser"),
    ("invert", "encode sprites to DDIM latents x_T and decode them again", "spritediff.latent_cli:add_invert_parser"),
    ("interpolate", "slerp between two latents (seeds or images), decode each frame",
     "spritediff.latent_cli:add_interpolate_parser"),
    ("edit", "variations, class changes (SDEdit) and inpainting of one sprite", "spritediff.latent_cli:add_edit_parser"),
    ("distill", "distil a model into a few-call student (progressive distillation; resumable)",
     "spritediff.distill_cli:add_distill_parser"),
    ("serve", "a local web playground: sample, race DDPM against DDIM, edit (needs the web extra)",
     "spritediff.serve.cli:add_serve_parser"),
]


class _Commands:
    """The subparsers as a command's builder sees them: add_parser(name, ...) gets the command's help from
    COMMANDS, declared once there."""

    def __init__(self, sub):
        self.sub, self.helps = sub, {name: text for name, text, _ in COMMANDS}

    def add_parser(self, name: str, **kwargs):
        return self.sub.add_parser(name, help=self.helps[name], **kwargs)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given argv, only the command it names is built in full (the others are their
    one-line help), so `spritediff --help` and a command's own --help or argument errors import only that
    command's parser module, never torch."""
    import importlib

    parser = OneLineParser(
        prog="spritediff", description="Diffusion models on 16x16 sprites: sample, train, benchmark, evaluate. "
                                       "Sprites by ElvGames, FrootsnVeggies and kyrise.")
    parser.add_argument("--version", action="version", version=f"spritediff {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else next((arg for arg in argv if not arg.startswith("-")), "")
    for name, text, where in COMMANDS:
        if chosen is not None and name != chosen:
            sub.add_parser(name, help=text)
            continue
        module, function = where.split(":")
        getattr(importlib.import_module(module), function)(_Commands(sub))
    return parser


def package_version() -> str:
    """spritediff's version from its installed package metadata ("unknown" when it is not installed)."""
    try:
        return version("spritediff")
    except PackageNotFoundError:
        return "unknown"


def stopped_by() -> str:
    """Why SIGTERM came: under torchrun its agent stops every process when one fails or is killed."""
    if launched_size() > 1:
        return "stopped by torchrun (another process of this job failed or was killed, or the job was stopped)"
    return "terminated"


def what_was_kept(args) -> str:
    """What a stopped command leaves behind: its own `kept` (train keeps its last checkpoint), else --out as it
    was, since every other command writes --out only once everything succeeded."""
    kept = getattr(args, "kept", None)
    return "--out left as it was" if kept is None else kept(args)


def main(argv: list[str] | None = None) -> int:
    previous = install_signal_handlers()
    args = None
    try:
        argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
        args = build_parser(argv).parse_args(argv)
        return args.run(args)
    except SpriteDiffError as err:
        if not isinstance(err, ReportedElsewhere) and (args is not None or launched_rank() == 0):  # once per job
            print(f"spritediff: error: {' '.join(str(err).split(chr(10)))}", file=sys.stderr)  # one line, always
        return 2
    except KeyboardInterrupt:
        if launched_rank() == 0:
            print(f"spritediff: interrupted; {what_was_kept(args)}", file=sys.stderr)
        return 130
    except Terminated:
        if launched_rank() == 0:
            print(f"spritediff: {stopped_by()}; {what_was_kept(args)}", file=sys.stderr)
        return 143
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
