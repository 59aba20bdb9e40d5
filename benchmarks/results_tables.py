"""Markdown tables of docs/results.md from the stored eval outputs (docs/eval/*/eval.json).

    python benchmarks/results_tables.py [docs/eval]

Prints the lab table (DDIM against DDPM at each step count), the solver table (FD at each NFE) and the
guidance table, so that the numbers on the page are the numbers in the files.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def load(folder: Path, name: str) -> dict:
    return json.loads((folder / name / "eval.json").read_text())


def cell(row: dict | None) -> str:
    return "" if row is None else f"{row['fd']:.3f} ({row['precision']:.2f})"


def lab_table(record: dict) -> str:
    by = {(r["family"], r["steps"]): r for r in record["results"]}
    lines = ["| steps (NFE) | DDIM | DDPM, course variance |", "| --- | --- | --- |"]
    for steps in (10, 20, 50, 100, 500):
        lines.append(f"| {steps} | {cell(by.get(('ddim', steps)))} | {cell(by.get(('ddpm', steps)))} |")
    return "\n".join(lines)


def solver_table(record: dict) -> str:
    rows = record["results"]
    nfes = sorted({r["nfe"] for r in rows if r["sampler"] != "heun"})
    lines = ["| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "| --- |" + " --- |" * len(nfes)]
    for family in dict.fromkeys(r["family"] for r in rows):
        cells = []
        for nfe in nfes:
            near = [r for r in rows if r["family"] == family and abs(r["nfe"] - nfe) <= 1]
            cells.append(" / ".join(f"{cell(r)}" + (f" (NFE {r['nfe']})" if r["nfe"] != nfe else "") for r in near))
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def guidance_table(folder: Path) -> str:
    lines = ["| guidance w | FD | precision | recall | class accuracy | FD seed vs seed |", "| --- | --- | --- | --- | --- | --- |"]
    for w in ("0", "0.5", "1", "2", "4"):
        path = folder / f"guidance_w{w}" / "eval.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        r = record["results"][0]
        lines.append(f"| {w} | {r['fd']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['class_accuracy']:.3f} "
                     f"| {record['noise']['fd_two_seeds']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/eval")
    for name, table in (("lab", lab_table), ("solvers", solver_table)):
        if (folder / name / "eval.json").is_file():
            record = load(folder, name)
            print(f"## {name}\n" + table(record) + f"\n\nnoise: {record['noise']}\n")
    print("## guidance\n" + guidance_table(folder))


if __name__ == "__main__":
    main()
