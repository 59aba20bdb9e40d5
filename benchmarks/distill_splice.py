"""Where does a 4-call student lose to its teacher's DDIM-20? Splice the two: each of the student's four calls is
replaced, or not, by the five guided teacher steps it was distilled from, and every splice is scored as `eval`
scores a sampler.

    python benchmarks/distill_splice.py --student S.safetensors --data sprites_base1788_16x16.npy \
        --labels sprite_labels_base1788.npy --seed 1 --patterns TTTT,SSSS,SSST,TTTS,STTT,TSSS \
        --out docs/eval/distill_splice/splice_s1.json

A pattern has one letter a call: S the student's call, T the teacher's DDIM steps over the same span, on the
grid the student was distilled from (its start_steps: five steps a call for the one-round 4-call students), guided
with the student's recorded guidance. TTTT is the teacher's DDIM-20 and SSSS the student's own sampler, so those
two rows repeat `spritediff eval --context data -n 512 --precision fp32` for the same seed exactly; the same
noise and label classes (eval's streams) go into every row. Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
import json
from pathlib import Path

import torch

from spritediff import render
from spritediff.checkpoint import load_model
from spritediff.data import base_set, load_data
from spritediff.distill import path_states
from spritediff.engine import Engine, initial_noise, sample_generators
from spritediff.evaluate import label_rows
from spritediff.features import load_features
from spritediff.features.split import sprite_groups
from spritediff.metrics import SpriteQuality
from spritediff.two_sample import two_sample_test


def spliced(pattern: str, teacher: Engine, student: Engine, guidance: float, x_T: torch.Tensor, context,
            grid: list[int]) -> torch.Tensor:
    """The sample (B,C,H,W) from x_T whose k-th call is the student's (S) or the teacher's DDIM steps (T) over
    the student's k-th span of grid (the teacher's trailing DDIM grid, len(pattern) spans)."""
    span = (len(grid) - 1) // len(pattern)
    alphas_cumprod = teacher.model.schedule.alphas_cumprod.float()
    x = x_T
    with torch.no_grad():
        for k, who in enumerate(pattern):
            times = grid[span * k: span * (k + 1) + 1]
            if who == "T":
                x = path_states(teacher.eps(context, guidance), x, times, span, alphas_cumprod)[:, -1]
            else:
                x = path_states(student.eps(context), x, times[::span], 1, alphas_cumprod)[:, -1]
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-n", type=int, default=512)
    parser.add_argument("--patterns", default="TTTT,SSSS,SSST,TTTS,STTT,TSSS")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    student_model = load_model(args.student)
    teacher_model = load_model(student_model.student.teacher.get("model", "default"))
    device = torch.device("cpu")
    teacher, student = Engine(teacher_model, device), Engine(student_model, device)
    data = load_data(args.data, args.labels, channels=3)
    real, labels = base_set(data.images.numpy(), data.labels.numpy())
    context = label_rows(torch.from_numpy(labels), sample_generators(args.seed, args.n, stream=1))
    x_T = initial_noise(sample_generators(args.seed, args.n), teacher.shape)
    grid = teacher_model.schedule.timesteps(student_model.student.start_steps, "trailing")
    quality, groups = SpriteQuality(load_features(), real, seed=args.seed), sprite_groups(real)
    rows = {}
    for pattern in args.patterns.split(","):
        images = render.to_uint8(spliced(pattern, teacher, student, student_model.student.guidance, x_T, context,
                                         grid))
        scores, test = quality.score(images), two_sample_test(images, real, groups, seed=args.seed)
        rows[pattern] = {key: round(scores[key], 4) for key in ("fd", "precision", "recall")}
        rows[pattern]["c2st"] = round(test["accuracy"], 4)
        print(pattern, rows[pattern], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"student": args.student, "seed": args.seed, "n": args.n, "rows": rows,
                                    "credit": "Sprites by ElvGames, FrootsnVeggies and kyrise"}, indent=1) + "\n")


if __name__ == "__main__":
    main()
