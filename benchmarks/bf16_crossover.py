"""From how many rows a model call does bf16 pay on this CPU? ms per call, fp32 against bf16, batch 1..32.

    python benchmarks/bf16_crossover.py --out docs/eval/cpu_speed/bf16_crossover.json

The fast path's net (folded, channels-last) with random weights, n_feat 32 and 64, no context; the mean over max(20, 400 / batch) calls after 5 warm-up calls. Run it alone on an idle machine. It sets
spritediff.fast.BF16_MIN_ROWS (the smallest batch at which precision "auto" picks bf16).
"""
import argparse
import json
from pathlib import Path

import torch

from cpu_speed import ms_per_call, random_model  # benchmarks/ is on the path when a script there runs
from spritediff.denoiser import Denoiser
from spritediff.fast import prepare_net

BATCHES = (1, 2, 4, 8, 16, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for width in (32, 64):
        model = random_model(width)
        net = prepare_net(model.net, torch.device("cpu"), fast=True)
        for batch in BATCHES:
            fp32, bf16 = (ms_per_call(Denoiser(net, model.schedule, bf16=low), batch) for low in (False, True))
            rows.append({"n_feat": width, "batch": batch, "fp32_ms": round(fp32, 2), "bf16_ms": round(bf16, 2),
                         "fp32_over_bf16": round(fp32 / bf16, 2)})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
