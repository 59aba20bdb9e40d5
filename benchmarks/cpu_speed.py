"""The CPU fast path measured: bench rows at batch 1, 32 and 256, n_feat 32 and 64, fp32 and bf16, with
diffusers' DDIMScheduler loop on the plain fp32 net as the reference row; and whether torch.compile pays.

    python benchmarks/cpu_speed.py --out docs/eval/cpu_speed [--repeat 3]

Run it alone on an idle machine (it times things). The nets have random weights (seed 0): speed does not
depend on the weights, and the reference's max difference still checks that both loops compute the same DDIM.
DDPM-500 (the lab's baseline) is timed at batch 32 only. Writes one bench JSON per (width, batch) and
compile.json, and prints the markdown table of docs/results.md.
"""
import argparse
import json
import time
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


def compile_trial(n_feat: int, batch: int) -> dict:
    """Seconds to compile the folded channels-last net with inductor, and ms per bf16 call compiled or not."""
    model = random_model(n_feat)
    net = prepare_net(model.net, torch.device("cpu"), fast=True)
    eager = Denoiser(net, model.schedule, bf16=True, prediction_type=model.prediction_type)
    start = time.perf_counter()
    compiled = Denoiser(torch.compile(net), model.schedule, bf16=True, prediction_type=model.prediction_type)
    compiled(torch.randn(batch, 3, 16, 16), torch.full((batch,), 250))
    compile_seconds = time.perf_counter() - start
    return {"n_feat": n_feat, "batch": batch, "compile_seconds": round(compile_seconds, 2),
            "eager_bf16_ms_per_call": round(ms_per_call(eager, batch), 2),
            "compiled_bf16_ms_per_call": round(ms_per_call(compiled, batch), 2)}


def table(reports: dict) -> str:
    lines = ["| n_feat | batch | sampler | fp32 s | bf16 s | diffusers loop (fp32) s | bf16 vs diffusers | "
             "max diff fp32 / bf16 vs diffusers (grey levels) |", "| --- " * 8 + "|"]
    for (width, batch), report in reports.items():
        rows = report["rows"]
        for spec in dict.fromkeys(row["steps"] and row["label"] for row in rows if not row["reference"]):
            fp32 = next(r for r in rows if r["label"] == spec and r["precision"] == "fp32")
            bf16 = next(r for r in rows if r["label"] == spec and r["precision"] == "bf16")
            ref = next((r for r in rows if r["reference"] and r["label"].endswith(spec)), None)
            ref_cells = ["", "", ""] if ref is None else [
                f"{ref['seconds']:.3f}", f"{ref['seconds'] / bf16['seconds']:.2f}×",
                " / ".join(str(v) for v in ref["max_diff_grey_levels"].values())]
            lines.append(f"| {width} | {batch} | {spec} | {fp32['seconds']:.3f} | {bf16['seconds']:.3f} | "
                         + " | ".join(ref_cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    reports = {}
    for width in WIDTHS:
        for batch in BATCHES:
            print(f"n_feat {width}, batch {batch} ...", flush=True)
            report = bench(random_model(width), specs_for(batch), n=batch, repeat=args.repeat,
                           precisions=("fp32", "bf16"), reference="diffusers").to_dict()
            report["model"] = f"random weights, n_feat {width}"
            (args.out / f"bench_nfeat{width}_batch{batch}.json").write_text(json.dumps(report, indent=2) + "\n")
            reports[width, batch] = report
    trials = [compile_trial(width, 32) for width in WIDTHS]
    (args.out / "compile.json").write_text(json.dumps(trials, indent=2) + "\n")
    print(table(reports))
    print(json.dumps(trials, indent=2))


if __name__ == "__main__":
    main()
