"""Wall time of drawing sprites as `spritediff sample` draws them (the class mix, guided), teacher against student.

    python benchmarks/distilled_speed.py --models default@ddim:20 default@ddpm:50 distilled --n 32,1000 \
        --out docs/eval/distilled/speed.json

Each row: one warm-up run, then the median of --repeat timed runs of spritediff.sample (its own `seconds`: the
sampling loop, without the one-off preparation of the net) at the default precision ("auto": bf16 on a CPU with
native bf16). The teacher's guided calls run both branches in one batch of 2n rows; a student's run one.
Run it on an idle machine. Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import spritediff
from compare_grids import calls_text  # benchmarks/ is on the path when a script there runs
from spritediff.specs import parse_sampler_spec


def timed_row(name: str, spec: str | None, n: int, repeat: int) -> dict:
    """{model, spec (None for a student: its own), calls, n, seconds (median), runs} at n sprites."""
    model = spritediff.load(name)
    if model.student is not None:
        sampler, steps, options = model.student.sampler, None, {}
    else:
        parsed = parse_sampler_spec(spec)
        sampler, steps, options = parsed.name, parsed.steps, parsed.options

    def run():
        return spritediff.sample(model, sampler, steps, n=n, context="mix", seed=0, frames=False, **options)

    calls = run().nfe
    runs = [run().seconds for _ in range(repeat)]
    label = f"{name} ({calls_text(model.student.calls)})" if model.student else f"{name} {spec}"
    return {"model": label, "spec": None if model.student else spec, "calls": calls, "n": n,
            "seconds": statistics.median(runs), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="MODEL or MODEL@SAMPLER (a student: its own)")
    parser.add_argument("--n", default="32,1000", help="comma-separated sprite counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for n in (int(v) for v in args.n.split(",")):
        for entry in args.models:
            name, _, spec = entry.partition("@")
            rows.append(timed_row(name, spec or None, n, args.repeat))
            print(f"{rows[-1]['model']:<32} n {n:>5}: {rows[-1]['seconds']:.2f} s", flush=True)
    record = {"rows": rows, "context": "mix", "precision": "auto", "repeat": args.repeat,
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
