"""Train candidate default models side by side on one GPU, each within a fixed wall-time budget.

    python benchmarks/gpu_train.py --data D/sprites_base1788_16x16.npy --labels D/sprite_labels_base1788.npy \
        --out OUTDIR --budget 420 [--device cuda]

A device lease is short and the step time of several runs sharing one GPU is not known ahead, so:
1. calibration: every run trains 300 steps at once; its seconds per step are read from its log (steps 100-300);
2. the real runs, again all at once, each with --steps = min(its target, budget / seconds per step), so that
   each one ends with its learning rate decayed to 0 inside the budget (a run still going at budget + 90 s
   is stopped and its last checkpointed EMA kept, marked "partial" in the summary).
3. with --eval, every finished model is judged on the same device by `spritediff eval` (the quality issue's
   command: n = 512, seed 1, the label contexts, guidance 0, DDIM-20 and DDPM-50, fp32), all at once.
Writes OUTDIR/<run>.tar (model, training log, its output), OUTDIR/evals.tar (each run's eval.json and output)
and OUTDIR/summary.json. Every run is a plain `spritediff train` command, recorded in its model file's metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

COURSE_STEPS = 28_608
RUNS = {  # name: (train arguments, target steps)
    "course_b100": (["--n-feat", "64", "--batch", "100"], COURSE_STEPS),
    "minsnr5_b100": (["--n-feat", "64", "--batch", "100", "--min-snr-gamma", "5"], COURSE_STEPS),
    "course_b400": (["--n-feat", "64", "--batch", "400"], COURSE_STEPS),
    "course_n128": (["--n-feat", "128", "--batch", "100"], COURSE_STEPS),
    # 2026-12-04: Min-SNR-5 (the CPU runs' best recipe per step) at width 128, with v-prediction and with a wider
    # context dropout, beside Min-SNR-5 at width 64 and the course loss at width 128 as controls
    "minsnr5_n128": (["--n-feat", "128", "--batch", "100", "--min-snr-gamma", "5"], COURSE_STEPS),
    "minsnr5_n128_v": (["--n-feat", "128", "--batch", "100", "--min-snr-gamma", "5", "--prediction", "v"],
                       COURSE_STEPS),
    "minsnr5_n128_drop02": (["--n-feat", "128", "--batch", "100", "--min-snr-gamma", "5", "--context-drop", "0.2"],
                            COURSE_STEPS),
}
EVAL_ARGS = ["--context", "data", "--guidance", "0", "--seed", "1", "--samplers", "ddim:20,ddpm:50",
             "--precision", "fp32"]


def train_command(args, name: str, extra: list[str], steps: int, out: Path) -> list[str]:
    (out / name).mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "spritediff", "train", "--data", args.data, "--labels", args.labels,
            "--out", str(out / name / "model.safetensors"), "--steps", str(steps), "--device", args.device,
            "--ckpt-every", "2000", "--overwrite", *extra]


def launch_all(commands: dict[str, list[str]], logs: Path) -> dict[str, subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    return {name: subprocess.Popen(cmd, stdout=open(logs / f"{name}.out", "w"), stderr=subprocess.STDOUT, env=env)
            for name, cmd in commands.items()}


def wait_all(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, str]:
    """Wait until every process ends or the deadline passes; those still running are stopped."""
    status = {}
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
            status[name] = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status[name] = "partial (stopped at the deadline)"
    return status


def show_failures(status: dict[str, str], logs: Path) -> None:
    for name, state in status.items():
        if state != "done":
            print(f"--- {name}: {state}; the end of its output:", *(logs / f"{name}.out").read_text()
                  .splitlines()[-15:], sep="\n", flush=True)


def eval_command(args, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "spritediff", "eval", "--data", args.data, "--labels", args.labels,
            "--model", str(model), "--device", args.device, "--n", str(args.eval_n), *EVAL_ARGS, "--out", str(out)]


def evaluate_all(args, names: list[str], work: Path) -> dict[str, str]:
    """Judge every run's saved model at once on the device; each eval's folder and output land in work/evals."""
    evals = work / "evals"
    models = {n: work / n / "model.safetensors" for n in names if (work / n / "model.safetensors").exists()}
    procs = launch_all({n: eval_command(args, m, evals / n) for n, m in models.items()}, evals)
    status = wait_all(procs, time.monotonic() + args.eval_budget)
    show_failures(status, evals)
    with tarfile.open(args.out / "evals.tar", "w") as tar:
        tar.add(evals, arcname="evals")
    return status


def seconds_per_step(log: Path, first: int) -> float:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    start = next(r for r in rows if r["step"] == first)
    return (rows[-1]["seconds"] - start["seconds"]) / (rows[-1]["step"] - first)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, default=420, help="seconds of training per run (default 420)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", default=",".join(RUNS), help="which of " + ", ".join(RUNS))
    p.add_argument("--calibration-steps", type=int, default=300)
    p.add_argument("--eval", action="store_true", help="judge every model on the device afterwards")
    p.add_argument("--eval-n", type=int, default=512, help="samples per sampler in the evaluations (default 512)")
    p.add_argument("--eval-budget", type=float, default=120, help="seconds the evaluations may take (default 120)")
    args = p.parse_args()
    runs = {name: RUNS[name] for name in args.runs.split(",")}
    work = Path("runs/gpu")
    args.out.mkdir(parents=True, exist_ok=True)

    cal = launch_all({n: train_command(args, n, extra, args.calibration_steps, work / "calibration")
                      for n, (extra, _) in runs.items()}, work / "calibration")
    cal_status = wait_all(cal, time.monotonic() + 240)
    show_failures(cal_status, work / "calibration")
    per_step = {n: seconds_per_step(work / "calibration" / n / "model.log.jsonl", args.calibration_steps // 3)
                for n in runs if cal_status[n] == "done"}
    print("calibration:", cal_status, {n: round(s * 1000, 2) for n, s in per_step.items()}, "ms/step", flush=True)

    steps = {n: min(target, max(100, int(args.budget / per_step[n]) // 100 * 100))
             for n, (_, target) in runs.items() if n in per_step}
    print("steps:", steps, flush=True)
    started = time.monotonic()
    procs = launch_all({n: train_command(args, n, runs[n][0], steps[n], work) for n in steps}, work)
    status = wait_all(procs, started + args.budget + 90)
    show_failures(status, work)
    wall = round(time.monotonic() - started, 1)

    summary = {"budget_s": args.budget, "wall_s": wall, "calibration_ms_per_step":
               {n: round(s * 1000, 3) for n, s in per_step.items()}, "steps": steps, "status": status}
    print(json.dumps(summary, indent=1), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for name in steps:
        files = [f for f in (work / name).glob("model*") if f.suffix != ".pt"] + [work / f"{name}.out"]
        with tarfile.open(args.out / f"{name}.tar", "w") as tar:
            for f in files:
                tar.add(f, arcname=f"{name}/{f.name}")
    if args.eval:
        summary["eval_status"] = evaluate_all(args, list(steps), work)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
