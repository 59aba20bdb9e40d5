"""The CPU fast path measured: bench rows at batch 1, 32 and 256, n_feat 32 and 64, fp32 and bf16, with
diffusers' DDIMScheduler loop on the plain fp32 net as the reference row; and whether torch.compile pays.

    python benchmarks/cpu_speed.py --out docs/eval/cpu_speed [--repeat 3]

Run it alone on an idle machine (it times things). The nets have random weights (seed 0): speed does not
depend on the weights, and the reference's max difference still checks that both loops compute the same DDIM.
DDPM-500 (the lab's baseline) is timed at batch 32 only. Writes one bench JSON per (width, batch) and
compile.json; `python benchmarks/results_tables.py` prints the tables of docs/results.md from them.
"""
import argparse
import json
import os
import tempfile
import time
from unittest import mock
from pathlib import Path

import torch

from spritediff.bench import bench
from spritediff.checkpoint import SpriteModel
from spritediff.denoiser import Denoiser
from spritediff.fast import prepare_net
from spritediff.models import ContextUnet
from spritediff.schedule import Schedule
from spritediff.sprites import COURSE_CLASSES

WIDTHS = (32, 64)
BATCHES = (1, 32, 256)


def random_model(n_feat: int) -> SpriteModel:
    torch.manual_seed(0)
    return SpriteModel(ContextUnet(n_feat=n_feat), Schedule.course(), COURSE_CLASSES)


def specs_for(batch: int) -> str:
    return "ddpm:500,ddim:20,dpmpp-2m:10" if batch == 32 else "ddim:20,dpmpp-2m:10"


def ms_per_call(denoiser: Denoiser, batch: int) -> float:
    """Mean ms of one denoiser call on a (batch,3,16,16) input, over max(20, 400 / batch) calls after 5 warm-ups."""
    x, t = torch.randn(batch, 3, 16, 16), torch.full((batch,), 250)
    for _ in range(5):
        denoiser(x, t)
    calls = max(20, 400 // batch)
    start = time.perf_counter()
    for _ in range(calls):
        denoiser(x, t)
    return 1000 * (time.perf_counter() - start) / calls


def compile_seconds(net, model: SpriteModel, batch: int) -> tuple[float, Denoiser]:
    """Seconds from torch.compile to the end of the first call (inductor compiles lazily), and the compiled denoiser."""
    torch._dynamo.reset()
    start = time.perf_counter()
    compiled = Denoiser(torch.compile(net), model.schedule, bf16=True, prediction_type=model.prediction_type)
    compiled(torch.randn(batch, 3, 16, 16), torch.full((batch,), 250))
    return time.perf_counter() - start, compiled


def compile_trial(n_feat: int, batch: int) -> dict:
    """Compile time of the folded channels-last net with inductor, cold (an empty inductor cache, as on a first
    run) and warm (the same cache again, as on every later run of one shape), and ms per bf16 call with and without."""
    model = random_model(n_feat)
    net = prepare_net(model.net, torch.device("cpu"), fast=True)
    eager = Denoiser(net, model.schedule, bf16=True, prediction_type=model.prediction_type)
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}):
        cold, _ = compile_seconds(net, model, batch)
        warm, compiled = compile_seconds(net, model, batch)
    return {"n_feat": n_feat, "batch": batch, "compile_seconds_cold_cache": round(cold, 2),
            "compile_seconds_warm_cache": round(warm, 2),
            "eager_bf16_ms_per_call": round(ms_per_call(eager, batch), 2),
            "compiled_bf16_ms_per_call": round(ms_per_call(compiled, batch), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compile-only", action="store_true", help="only the torch.compile trial (compile.json)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for width in () if args.compile_only else WIDTHS:
        for batch in BATCHES:
            print(f"n_feat {width}, batch {batch} ...", flush=True)
            report = bench(random_model(width), specs_for(batch), n=batch, repeat=args.repeat,
                           precisions=("fp32", "bf16"), reference="diffusers").to_dict()
            report["model"] = f"random weights, n_feat {width}"
            (args.out / f"bench_nfeat{width}_batch{batch}.json").write_text(json.dumps(report, indent=2) + "\n")
    trials = [compile_trial(width, 32) for width in WIDTHS]
    (args.out / "compile.json").write_text(json.dumps(trials, indent=2) + "\n")
    print(json.dumps(trials, indent=2))
    print("the tables of docs/results.md: python benchmarks/results_tables.py")


if __name__ == "__main__":
    main()
