"""`spritediff bench`: its parser and runner (the timing itself is bench.py). Importing this module imports no
torch, so `spritediff --help` and bench's argument errors stay instant."""
from __future__ import annotations

import argparse
import sys

from .checks import check_precision_name
from .errors import SpriteDiffError


def add_bench_parser(sub) -> None:
    from .arguments import add_device_argument, add_model_argument, bounded_int, positive_int
    from .defaults import MAX_BENCH_N

    p = sub.add_parser("bench",
                       description="Time each sampler on one model: median wall time over --repeat runs after a "
                                   "warm-up, NFE, images/s, time per model call, speed-up over ddpm:T (else over "
                                   "the first sampler), and the bare cost of NFE model calls, which shows the "
                                   "sampler's own overhead.")
    add_model_argument(p)
    p.add_argument("--samplers", help="comma-separated specs name:steps[:key=value...], e.g. "
                                      "ddpm:500,ddim:20,ddim:20:eta=1,ddpm:100:variance=posterior "
                                      "(default: ddpm:T,ddim:20; for a distilled student its own sampler, "
                                      "'student', e.g. ddim:4)")
    p.add_argument("-n", "--n", type=bounded_int(1, MAX_BENCH_N), default=32,
                   help=f"samples per run, one batch, 1..{MAX_BENCH_N} (default 32)")
    add_device_argument(p)
    p.add_argument("--repeat", type=positive_int, default=3, help="timed runs per sampler; the median is shown "
                                                                 "(default 3)")
    p.add_argument("--precision", type=precision_list, default=["auto"],
                   help="comma-separated precisions to time each sampler at, from fp32 (exact), bf16 (the net under "
                        "bf16 autocast) and auto (bf16 on a CPU with native bf16, else fp32), e.g. fp32,bf16 "
                        "(default auto)")
    p.add_argument("--eager", action="store_true",
                   help="time the net as stored: no BatchNorm folding, channels-last or CUDA graph replay")
    p.add_argument("--reference", choices=["diffusers"],
                   help="after each plain ddim spec, also time diffusers' DDIMScheduler loop on the plain fp32 net "
                        "(needs pip install diffusers)")
    p.add_argument("--json", action="store_true", help="print JSON (with machine, torch, device, threads, date) "
                                                       "instead of the table")
    p.set_defaults(run=run_bench)


def precision_list(text: str) -> list[str]:
    """'fp32,bf16' -> ['fp32', 'bf16'], each checked (an argparse type)."""
    try:
        return [check_precision_name(part.strip()) for part in text.split(",")]
    except SpriteDiffError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_bench(args) -> int:
    from .bench import bench, default_specs
    from .checkpoint import load_model
    from .engine import resolve_device
    from .specs import parse_model_specs

    model = load_model(args.model)
    specs = parse_model_specs(args.samplers, model, default_specs(model.schedule.T))
    device = resolve_device(args.device)
    report = bench(model, specs, args.n, device, args.repeat, progress=sys.stderr.isatty(), fast=not args.eager,
                   precisions=args.precision, reference=args.reference)
    from .outputs import json_text

    print(json_text(report.to_dict(), "the bench report").rstrip() if args.json else report.table())
    return 0
