"""`spritediff train`: its parser and runner (the training loop itself is train.py). Importing this module
imports no torch, so `spritediff --help` stays instant."""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

from .errors import SpriteDiffError
from .outputs import model_out_path


def add_train_parser(sub) -> None:
    from .arguments import (add_device_argument, duration, finite_float, nonnegative_float, positive_float,
                            positive_int, seed_int, step_list)
    from .checks import NORMS
    from .train_config import BN_STATS, COURSE_STEPS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train",
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
                             "and EMA are fitted to that length (recorded in the model; one process only); its loss is "
                             "Min-SNR-5 weighted unless --min-snr-gamma is given, and on a CPU with AVX-512 BF16 or "
                             "AMX it trains in bf16 unless --precision is given (the better recipes per CPU-hour, "
                             "docs/default_model.md)")
    p.add_argument("--batch", type=positive_int, default=argparse.SUPPRESS, help=f"global batch size (default {d.batch})")
    p.add_argument("--lr", type=positive_float, default=argparse.SUPPRESS,
                   help=f"Adam learning rate, decayed linearly to 0 (default {d.lr})")
    p.add_argument("--lr-decay-steps", type=positive_int, default=argparse.SUPPRESS, metavar="N",
                   help="the linear decay reaches 0 at step N, at or past the run's end (default: at its end); "
                        "larger, the run stops before the learning rate is annealed, as in a run cut short by a "
                        "time limit")
    p.add_argument("--n-feat", type=positive_int, default=argparse.SUPPRESS, help=f"U-Net width (default {d.n_feat})")
    p.add_argument("--context-drop", type=finite_float, default=argparse.SUPPRESS,
                   help=f"probability of training a sample without its context (default {d.context_drop})")
    p.add_argument("--ema", type=finite_float, default=argparse.SUPPRESS, help=f"EMA decay of the saved weights (default {d.ema})")
    p.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="warm the EMA up (default): decay min(--ema, (1 + n) / (10 + n)) after n steps, so that a "
                        "short run's saved weights do not still carry its first ones (without it 13%% of the average "
                        "is the step-1 weights after 2,000 steps at decay 0.999; docs/default_model.md). "
                        "--no-ema-warmup: the fixed decay, as in runs made before this option existed (resume "
                        "those with it)")
    p.add_argument("--seed", type=seed_int, default=argparse.SUPPRESS,
                   help=f"seed of weights, data order and noise, 0..2^63-1 (default {d.seed})")
    add_device_argument(p)
    p.add_argument("--precision", choices=["fp32", "bf16"], default=argparse.SUPPRESS,
                   help="fp32 (default, bit-reproducible; with --time, only where the CPU lacks native bf16) or bf16: "
                        "autocast forward pass and channels-last weights, 1.6-2x faster a step on CPUs with "
                        "AVX-512 BF16, the same loss curve (docs/results.md)")
    p.add_argument("--prediction", choices=["eps", "x0", "v"], default=argparse.SUPPRESS,
                   help="what the net learns to predict: eps (default, the noise), x0 (the clean image) or v "
                        "(sqrt(ab) eps - sqrt(1-ab) x0); stored in the model, every sampler reads it")
    p.add_argument("--min-snr-gamma", type=nonnegative_float, default=argparse.SUPPRESS,
                   help="Min-SNR-gamma loss weighting (Hang et al. 2023): each sample's loss weighted so that its "
                        "weight in x0 terms is min(SNR, gamma); 5 is the paper's choice; 0 (default) is the course's "
                        "plain MSE; with --time 5 (it trains better per CPU-hour)")
    p.add_argument("--input-perturbation", type=nonnegative_float, default=argparse.SUPPRESS, metavar="GAMMA",
                   help="input perturbation (DDPM-IP, Ning et al. 2023): the net's input x_t is built from noise + "
                        "GAMMA xi (xi fresh Gaussian noise) while its target keeps the noise, so training sees inputs "
                        "as far off the forward process as sampling's own steps; 0.1 is the paper's choice; 0 "
                        "(default) off")
    p.add_argument("--terminal-snr", type=nonnegative_float, default=argparse.SUPPRESS, metavar="SNR",
                   help="rescale the schedule so that its signal-to-noise ratio at t = T is SNR (Lin et al. 2024), "
                        "e.g. 1e-5: the course's leaves 8%% of the image in x_T (SNR 0.0063), which samplers starting "
                        "from pure noise never give the net; below 0.0063; pair it with --prediction v, as eps "
                        "tells almost nothing of the image at such an SNR (measured at 1e-5: DDIM's sprites of the real brightness, "
                        "docs/default_model.md); 0 (default): the course's schedule")
    p.add_argument("--norm", choices=NORMS, default=argparse.SUPPRESS,
                   help="the U-Net's normalisation in its conv blocks: batch (default), the course's BatchNorm, whose "
                        "EMA net keeps statistics measured on another net; group, GroupNorm, the same in training and "
                        "sampling (no statistics to store)")
    p.add_argument("--bn-stats", choices=BN_STATS, default=argparse.SUPPRESS,
                   help="the BatchNorm statistics saved with the EMA weights: ema (default), an average of the live "
                        "net's, matching the EMA weights; live, the live net's own, copied at every step as the "
                        "course's recipe does. With a learning rate not annealed to 0 (--lr-decay-steps past the run's "
                        "end), live gives DDIM more varied sprites and costs DDPM precision (docs/default_model.md)")
    p.add_argument("--init", metavar="MODEL", default=argparse.SUPPRESS,
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
                       help="continue from OUT's .train.pt checkpoint with its own settings (any given must match; "
                            "without --steps: to the run's own end); a "
                            "finished run continues to a larger --steps, its learning rate decaying over the new total")
    start.add_argument("--overwrite", action="store_true",
                       help="replace an existing run at OUT (its model, .train.pt and .log.jsonl); without it "
                            "train refuses to start over an existing run")
    p.set_defaults(run=run_train, kept=what_train_kept)


def run_train(args) -> int:
    import torch

    from .data import load_data
    from .engine import resolve_device
    from .fast import cpu_has_native_bf16
    from .train import TrainConfig, check_run_files, fit_to_time, run_training

    out = model_out_path(args.out)
    check_run_files(out, args.resume, args.overwrite)
    if args.time and (args.resume or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise SpriteDiffError("--time chooses a new run's length in one process; resume with --resume alone, "
                              "and under torchrun give --steps")
    device = resolve_device(args.device)
    data = load_data(args.data, args.labels, args.channels)
    settings = run_settings(args, out, native_bf16=bool(args.time) and device.type == "cpu" and cpu_has_native_bf16())
    config = TrainConfig(steps=train_steps(args, len(data), settings), **settings)
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


def run_settings(args, out: Path, native_bf16: bool) -> dict:
    """TrainConfig's settings but steps: each one given on the command line; the others, on --resume, the run's
    own (so --resume alone continues a run, --time's fitted EMA included), else the defaults, with --time's
    recipe over them (native_bf16: whether the training device runs bf16 natively)."""
    from .train import saved_config, state_path
    from .train_config import TrainConfig, time_recipe

    if args.resume:
        base = saved_config(state_path(out))
    else:
        base = {**asdict(TrainConfig()), **(time_recipe(native_bf16) if args.time else {})}
    return {name: getattr(args, name, base[name]) for name in TrainConfig.options()}


def train_steps(args, n_images: int, settings: dict) -> int:
    """--steps, else ceil(--epochs * N / batch), else on --resume the run's own total, else COURSE_STEPS
    (--time chooses its own later, from this machine's pace)."""
    from .train import COURSE_STEPS, MAX_STEPS, checkpoint_steps

    if args.steps:
        steps = args.steps
    elif args.epochs:
        steps = math.ceil(args.epochs * n_images / settings["batch"])
    else:
        steps = checkpoint_steps(model_out_path(args.out)) if args.resume else COURSE_STEPS
    if steps > MAX_STEPS:
        raise SpriteDiffError(f"--steps (or --epochs) asks for {steps} steps; at most {MAX_STEPS}")
    return steps


def what_train_kept(args) -> str:
    """What a stopped train leaves behind: its last checkpoint, and the model written with it."""
    from .train import checkpoint_kept, read_state

    return checkpoint_kept(args.out, read_state)
