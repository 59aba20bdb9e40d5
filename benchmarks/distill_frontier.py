"""Where the 4-call students stand against the teacher's DDIM-20: precision against recall and FD against the
two-sample test, from stored `spritediff eval` outputs (one per scoring seed).

    python benchmarks/distill_frontier.py --out docs/eval/distill_dmd/frontier.png \
        "teacher ddim:20=docs/eval/distilled/teacher/eval.json,docs/eval/distill_wide/teacher_s*/eval.json" \
        "start=docs/eval/distill_init/4call_critic06_s*/eval.json" ...

Each argument is LABEL=GLOB[,GLOB...]; the first is the reference whose per-seed means draw the dashed lines (the
bar: a student must sit right of and above them in the first panel, left of and below them in the second). From a
file with several samplers, its ddim:20 row is taken if the label starts with "teacher", else its first row.
Labels of one setting share a colour (the label up to " seed"); a label with "end" in it is drawn as a square (a
run's end), one with "step" as a circle (a point along a run), others as diamonds.
"""
from __future__ import annotations

import argparse
import glob
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CREDIT = "Sprites by ElvGames, FrootsnVeggies and kyrise"


def rows(spec: str) -> tuple[str, list[dict]]:
    """(label, eval results, one per file) of a LABEL=GLOB[,GLOB...] argument."""
    label, _, patterns = spec.partition("=")
    paths = sorted(p for pattern in patterns.split(",") for p in glob.glob(pattern))
    if not paths:
        raise SystemExit(f"no eval output matches {patterns!r}")
    results = []
    for path in paths:
        found = json.load(open(path))["results"]
        teacher = [r for r in found if r["spec"] == "ddim:20"] if label.startswith("teacher") else []
        results.append((teacher or found)[0])
    return label, results


def mean(results: list[dict], key: str) -> float:
    return sum(r[key] for r in results) / len(results)


def plot(groups: list[tuple[str, list[dict]]], out: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    panels = (("recall", "precision", "higher is better on both"), ("c2st", "fd", "lower is better on both"))
    settings = list(dict.fromkeys(label.split(" seed")[0] for label, _ in groups[1:]))
    for ax, (x, y, note) in zip(axes, panels):
        for i, (label, results) in enumerate(groups):
            colour = "black" if i == 0 else plt.get_cmap("tab10")(settings.index(label.split(" seed")[0]) % 10)
            marker = "*" if i == 0 else "s" if "end" in label else "o" if "step" in label else "D"
            ax.scatter([r[x] for r in results], [r[y] for r in results], color=colour, alpha=0.3, s=18,
                       marker=marker)
            ax.scatter(mean(results, x), mean(results, y), color=colour, s=80, edgecolor="black",
                       label=f"{label} (n={len(results)})", marker=marker)
        ax.axvline(mean(groups[0][1], x), color="black", ls="--", lw=0.8)
        ax.axhline(mean(groups[0][1], y), color="black", ls="--", lw=0.8)
        ax.set_xlabel("two-sample test (C2ST accuracy)" if x == "c2st" else x)
        ax.set_ylabel("FD" if y == "fd" else y)
        ax.set_title(f"{y if y != 'fd' else 'FD'} against {x if x != 'c2st' else 'C2ST'} ({note}); "
                     f"faint: single scoring seeds", fontsize=9)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.text(0.99, 0.01, CREDIT, ha="right", fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", metavar="LABEL=GLOB[,GLOB...]",
                        help="eval outputs of one sampler or student; the first is the reference")
    parser.add_argument("--out", required=True, help="the figure (.png)")
    args = parser.parse_args()
    plot([rows(spec) for spec in args.groups], args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
