"""Run `spritediff eval` with one change to how a sampler runs, to probe why few-step sampling trails.

    python benchmarks/sampler_probes.py --probe start-mean --data D/sprites_base1788_16x16.npy -- EVAL_ARGS
    python benchmarks/sampler_probes.py --probe eps-scale --value 1.01 --data D/sprites_base1788_16x16.npy -- EVAL_ARGS

start-mean: x_T gets sqrt(ab_T) times the mean training image added (VALUE times that), the mean that the forward
    process leaves in x_T when the schedule's terminal SNR is not 0 (Lin et al., WACV 2024).
eps-scale: every eps the sampler receives is divided by VALUE (epsilon scaling against exposure bias, Ning et al.,
    ICLR 2024), for every sampler and every step alike.
Everything after `--` goes to `spritediff eval` unchanged (give it the same --data).
"""
from __future__ import annotations

import argparse

import numpy as np

import spritediff.engine as engine
from spritediff.cli import main as spritediff_main
from spritediff.pixels import to_model_space
from spritediff.schedule import Schedule


def add_start_mean(data: str, value: float) -> None:
    """Patch engine.initial_noise: x_T + value * sqrt(ab_T) * (the mean training image in [-1, 1], (C, H, W)),
    ab_T of the course schedule (the shipped models' and the reference's)."""
    mean = to_model_space(np.load(data)).mean(0)
    schedule = Schedule.course()
    shift = value * schedule.alpha_bar(schedule.T) ** 0.5 * mean
    plain = engine.initial_noise
    engine.initial_noise = lambda generators, shape: plain(generators, shape) + shift


def scale_eps(value: float) -> None:
    """Patch engine.CountingEps, through which every sampler calls the net: eps / value."""
    plain = engine.CountingEps.__call__
    engine.CountingEps.__call__ = lambda self, x, t: plain(self, x, t) / value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probe", choices=["start-mean", "eps-scale"], required=True)
    p.add_argument("--value", type=float, default=1.0)
    p.add_argument("--data", required=True, help="the training images (.npy), for start-mean's mean")
    p.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- and then spritediff eval's arguments")
    args = p.parse_args()
    if args.probe == "start-mean":
        add_start_mean(args.data, args.value)
    else:
        scale_eps(args.value)
    rest = args.eval_args[1:] if args.eval_args[:1] == ["--"] else args.eval_args
    raise SystemExit(spritediff_main(["eval", "--data", args.data, *rest]))


if __name__ == "__main__":
    main()
