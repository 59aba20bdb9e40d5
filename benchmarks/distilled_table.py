"""The distillation table of docs/results.md from the stored outputs of benchmarks/distilled.sh.

    python benchmarks/distilled_table.py [docs/eval/distilled]

One row per sampler: the teacher's rows (teacher/eval.json), then each student's (*/eval.json, its own sampler),
with FD, precision, recall and the two-sample test (its two splits), and the wall times of speed.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def eval_rows(folder: Path) -> list[tuple[str, dict, bool]]:
    """(label, eval.json result, is a student) for the teacher's samplers, then the students' from the most calls
    to the fewest (a student's spec is its own sampler, "ddim:4", like the teacher's DDIM-4)."""
    teacher = json.loads((folder / "teacher" / "eval.json").read_text())["results"]
    students = [json.loads(path.read_text())["results"][0] for path in sorted(folder.glob("*/eval.json"))
                if path.parent.name != "teacher"]
    students.sort(key=lambda r: -r["nfe"])
    return [(f"teacher {r['spec']}", r, False) for r in teacher] + \
        [(f"student, {r['nfe']} call{'s' * (r['nfe'] > 1)}", r, True) for r in students]


def seconds(speed: dict, result: dict, student: bool, n: int) -> str:
    """The median wall time of the speed row of this eval result's sampler (a student's: its calls) at n."""
    for row in speed["rows"]:
        same = row["calls"] == result["nfe"] if student else row["spec"] == result["spec"]
        if same and (row["spec"] is None) == student and row["n"] == n:
            return f"{row['seconds']:.2f}"
    return ""


def table(folder: Path) -> str:
    speed = json.loads((folder / "speed.json").read_text()) if (folder / "speed.json").exists() else {"rows": []}
    lines = ["| sampler | calls | FD | precision | recall | two-sample test (splits) | 32 sprites, s | "
             "1,000 sprites, s |",
             "| --- " * 8 + "|"]
    for label, r, student in eval_rows(folder):
        splits = ", ".join(f"{v:.3f}" for v in r["c2st_splits"])
        lines.append(f"| {label} | {r['nfe']} | {r['fd']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['c2st']:.3f} ({splits}) | {seconds(speed, r, student, 32)} | "
                     f"{seconds(speed, r, student, 1000)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/eval/distilled")))
