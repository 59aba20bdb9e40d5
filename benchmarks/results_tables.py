"""Markdown tables of docs/results.md from the stored eval outputs (docs/eval/*/eval.json).

    python benchmarks/results_tables.py [docs/eval]

Prints the lab table (DDIM against DDPM at each step count), the solver table (FD at each NFE), the
guidance table, the lab's speed table (bench_cpu_n32.json), bf16 against fp32 (bf16_*/bf16.json) and the
playground's batching table (serve_batching.json), so that the numbers on the page are the numbers in the files.
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
    lines = ["| steps (NFE) | DDIM | DDPM, course variance (b_t) | DDPM, posterior variance |", "| --- " * 4 + "|"]
    for steps in (10, 20, 50, 100, 500):
        lines.append(f"| {steps} | {cell(by.get(('ddim', steps)))} | {cell(by.get(('ddpm', steps)))} | "
                     f"{cell(by.get(('ddpm variance=posterior', steps)))} |")
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


def speed_table(record: dict) -> str:
    lines = ["| sampler | precision | NFE | wall time | images/s | ms per model call | sampler overhead | "
             "speed-up vs DDPM-500 fp32 |", "| --- " * 8 + "|"]
    for r in record["rows"]:
        lines.append(f"| {r['label']} | {r['precision']} | {r['nfe']} | {r['seconds']:.3f} s | "
                     f"{r['images_per_second']:.1f} | {1000 * r['seconds_per_call']:.1f} | "
                     f"{100 * r['overhead']:.1f} % | {r['speedup']:.1f}x |")
    return "\n".join(lines)


def bf16_table(folder: Path) -> str:
    lines = ["| model | n | sampler | FD fp32 seed 0 / seed 1 | FD bf16 seed 0 | FD fp32-bf16 (same noise) | "
             "FD seed 0-seed 1 | precision fp32 / bf16 | max / mean pixel diff | pixels > 8 levels |",
             "| --- " * 10 + "|"]
    for path in sorted(folder.glob("bf16_*/bf16.json")):
        record = json.loads(path.read_text())
        for r in record["rows"]:
            a, b, c = r["fp32_seed0"], r["fp32_seed1"], r["bf16_seed0"]
            lines.append(f"| {path.parent.name} | {record['n']} | {r['spec']} | {a['fd']:.3f} / {b['fd']:.3f} | "
                         f"{c['fd']:.3f} | {r['fd_fp32_vs_bf16']:.4f} | {r['fd_fp32_seed0_vs_seed1']:.3f} | "
                         f"{a['precision']:.2f} / {c['precision']:.2f} | {r['max_pixel_diff']} / "
                         f"{r['mean_pixel_diff']:.2f} | {100 * r['share_over_8_levels']:.1f} % |")
    return "\n".join(lines)


def cpu_speed_table(folder: Path) -> str:
    """Wall time of each sampler at each precision, per n_feat and batch (eval/cpu_speed/bench_*.json)."""
    lines = ["| n_feat | batch | sampler | fp32 | bf16 | diffusers loop (plain fp32 net) | bf16 vs diffusers | "
             "max diff vs diffusers, fp32 / bf16 (grey levels) |", "| --- " * 8 + "|"]
    for n_feat in (32, 64):
        for batch in (1, 32, 256):
            path = folder / f"bench_nfeat{n_feat}_batch{batch}.json"
            if not path.is_file():
                continue
            rows = json.loads(path.read_text())["rows"]
            reference = {r["label"].removeprefix("diffusers "): r for r in rows if r["reference"]}
            for label in dict.fromkeys(r["label"] for r in rows if not r["reference"]):
                time = {r["precision"]: r["seconds"] for r in rows if r["label"] == label and not r["reference"]}
                ref = reference.get(label)
                extra = ("| | | |" if ref is None else f"| {ref['seconds']:.3f} | {ref['seconds'] / time['bf16']:.2f}x | "
                         f"{ref['max_diff_grey_levels']['fp32']} / {ref['max_diff_grey_levels']['bf16']} |")
                lines.append(f"| {n_feat} | {batch} | {label} | {time['fp32']:.3f} | {time['bf16']:.3f} " + extra)
    return "\n".join(lines)


def crossover_table(record: dict) -> str:
    """ms per model call in fp32 and bf16 against the rows a call (eval/cpu_speed/bf16_crossover.json)."""
    rows = record["rows"]
    batches = sorted({r["batch"] for r in rows})
    lines = ["| batch (rows a call) | " + " | ".join(map(str, batches)) + " |", "| --- " * (len(batches) + 1) + "|"]
    for n_feat in sorted({r["n_feat"] for r in rows}):
        by = {r["batch"]: r for r in rows if r["n_feat"] == n_feat}
        lines.append(f"| n_feat {n_feat}: fp32 / bf16 | " + " | ".join(
            f"{by[b]['fp32_ms']:.2f} / {by[b]['bf16_ms']:.2f}" for b in batches) + " |")
    return "\n".join(lines)


def serve_table(record: dict) -> str:
    lines = ["| clients | batching | requests/s | sprites/s | p50 latency | p95 latency |", "| --- " * 6 + "|"]
    for mode, result in record["results"].items():
        for level in result["levels"]:
            lines.append(f"| {level['clients']} | {mode} | {level['requests_per_second']:.2f} | "
                         f"{level['sprites_per_second']:.1f} | {level['p50_seconds']:.2f} s | "
                         f"{level['p95_seconds']:.2f} s |")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/eval")
    for name, table in (("lab", lab_table), ("solvers", solver_table)):
        if (folder / name / "eval.json").is_file():
            record = load(folder, name)
            print(f"## {name}\n" + table(record) + f"\n\nnoise: {record['noise']}\n")
    print("## guidance\n" + guidance_table(folder))
    if (folder / "bench_cpu_n32.json").is_file():
        print("\n## speed\n" + speed_table(json.loads((folder / "bench_cpu_n32.json").read_text())))
    speed = folder / "cpu_speed"
    if speed.is_dir():
        print("\n## CPU fast path, seconds for the batch\n" + cpu_speed_table(speed))
        print("\n## bf16 crossover, ms a call\n" + crossover_table(json.loads((speed / "bf16_crossover.json").read_text())))
        print("\ntorch.compile: " + (speed / "compile.json").read_text())
    print("\n## bf16 against fp32\n" + bf16_table(folder))
    if (folder / "serve_batching.json").is_file():
        print("\n## serving\n" + serve_table(json.loads((folder / "serve_batching.json").read_text())))


if __name__ == "__main__":
    main()
