"""`spritediff bench`: the lab's %timeit of DDIM against DDPM, for any registered samplers.

For each sampler spec: the median wall time of sample(..., frames=False) over `repeat` runs after
one warm-up run, its NFE (model calls), images per second, seconds per model call and the speed-up
over a baseline row; beside it the bare cost of the same NFE calls of the denoiser alone on a fixed
batch (no sampler arithmetic, no noise drawing), so that the sampler's own overhead shows. Each
repeat times the sampler and then the bare calls, so both see the same load on a shared machine.
"""
from __future__ import annotations

import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import SpriteModel
from .fast import resolve_precision
from .pixels import to_uint8
from .engine import Engine, resolve_device
from .sampling import sample
from .defaults import MAX_BENCH_N
from .errors import SpriteDiffError
from .checks import check_int, check_seed
from .specs import SamplerSpec, parse_model_specs




@dataclass
class BenchRow:
    """One sampler's timings. times, bare_times: seconds of each timed run (sampler; NFE bare calls).

    precision: the resolved fp32 or bf16 of the net; reference: the name of an outside loop timed on the same
    net (e.g. "diffusers"), else None; max_diff: for a reference row, its largest difference in grey levels
    (0..255) from spritediff's own sampler on the same noise at each precision timed."""

    spec: SamplerSpec
    n: int
    nfe: int
    times: list[float]
    bare_times: list[float]
    speedup: float = 1.0  # baseline seconds / these seconds
    precision: str = "fp32"
    reference: str | None = None
    max_diff: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.spec.label if self.reference is None else f"{self.reference} {self.spec.label}"

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)

    @property
    def bare_seconds(self) -> float:
        return statistics.median(self.bare_times)

    @property
    def images_per_second(self) -> float:
        return self.n / self.seconds

    @property
    def seconds_per_call(self) -> float:
        return self.seconds / self.nfe

    @property
    def overhead(self) -> float:
        """The share of the wall time not spent in model calls: (seconds - bare_seconds) / seconds."""
        return (self.seconds - self.bare_seconds) / self.seconds

    def to_dict(self) -> dict:
        return {"label": self.label, "precision": self.precision, "reference": self.reference,
                "max_diff_grey_levels": self.max_diff or None, "sampler": self.spec.name, "steps": self.spec.steps,
                "options": dict(self.spec.options), "nfe": self.nfe, "seconds": self.seconds,
                "images_per_second": self.images_per_second, "seconds_per_call": self.seconds_per_call,
                "bare_seconds": self.bare_seconds, "bare_seconds_per_call": self.bare_seconds / self.nfe,
                "overhead": self.overhead, "speedup": self.speedup, "times": self.times,
                "bare_times": self.bare_times}


@dataclass
class BenchReport:
    """All rows of one bench run; speed-ups are against rows[baseline]."""

    rows: list[BenchRow]
    baseline: int
    n: int
    repeat: int
    model: str
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.environment, "model": self.model, "n": self.n, "repeat": self.repeat, "warmup": 1,
                "baseline": self.rows[self.baseline].label, "rows": [row.to_dict() for row in self.rows]}

    def table(self) -> str:
        env = self.environment
        header = (f"{self.n} samples on {env.get('device', '?')} ({env.get('device_name', '?')}, "
                  f"{_plural(env.get('threads', '?'), 'thread')}), torch {env.get('torch', '?')}, "
                  f"median of {_plural(self.repeat, 'run')} after 1 warm-up")
        base = self.rows[self.baseline]
        columns = ["sampler", "precision", "NFE", "time s", "images/s", "ms/call", "bare s", "overhead",
                   f"speed-up vs {base.label} {base.precision}"]
        cells = [[row.label, row.precision, str(row.nfe), f"{row.seconds:.3f}", f"{row.images_per_second:.1f}",
                  f"{1000 * row.seconds_per_call:.2f}", f"{row.bare_seconds:.3f}", f"{100 * row.overhead:+.1f}%",
                  f"{row.speedup:.1f}x"] for row in self.rows]
        widths = [max(len(c[i]) for c in [columns, *cells]) for i in range(len(columns))]
        lines = [header, ""]
        for line in [columns, *cells]:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                                   enumerate(zip(line, widths))).rstrip())
        lines += ["", f"bare s: the denoiser alone called NFE times on a fixed batch of {self.n} (no sampler "
                      "arithmetic, no noise drawing); overhead: the rest of the wall time."]
        lines += [f"{row.label} (the plain fp32 net, as stored) differs from spritediff's {row.spec.label} on the "
                  f"same noise by at most " + ", ".join(f"{v} grey levels ({k})" for k, v in row.max_diff.items())
                  for row in self.rows if row.reference]
        return "\n".join(lines)

    __str__ = table


def _plural(count, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def baseline_index(specs: Sequence[SamplerSpec], T: int) -> int:
    """The row speed-ups are measured against: the first plain ddpm:T (the lab's DDPM-500), else the first
    (a reference row is never the baseline when a spritediff row can be)."""
    for i, spec in enumerate(specs):
        if spec.name == "ddpm" and spec.steps == T and not spec.options:
            return i
    return 0


def set_speedups(rows: Sequence[BenchRow], baseline: int) -> None:
    """row.speedup = baseline's median seconds / row's median seconds."""
    for row in rows:
        row.speedup = rows[baseline].seconds / row.seconds


def default_specs(T: int) -> str:
    return f"ddpm:{T},ddim:20"


def bench(model: SpriteModel, specs: str | Sequence[SamplerSpec] | None = None, n: int = 32,
          device: str | torch.device | None = "cpu", repeat: int = 3, seed: int = 0,
          progress: bool = False, fast: bool = True, precisions: Sequence[str] = ("auto",),
          reference: str | None = None) -> BenchReport:
    """Time each sampler spec (default "ddpm:T,ddim:20"; a distilled student's own, "student") on n samples at
    each precision; see the module's docstring.

    specs: a spec string like "ddpm:500,ddim:20,ddim:20:eta=1" or parsed SamplerSpecs.
    progress: print one line per row to stderr as it starts.
    fast, precisions: sample()'s fast path and precisions ("fp32", "bf16", "auto"), for the bare calls too;
    rows of precisions that resolve alike are timed once.
    reference: "diffusers" adds, after each ddim spec, diffusers' DDIMScheduler loop driving the plain fp32 net.
    """
    if not isinstance(model, SpriteModel):
        raise SpriteDiffError(f"model must be a SpriteModel (spritediff.load(...)), got {type(model).__name__}")
    n, repeat, seed = check_int(n, "n", 1, MAX_BENCH_N), check_int(repeat, "repeat", 1), check_seed(seed)
    T = model.schedule.T
    if specs is None or isinstance(specs, str):
        specs = parse_model_specs(specs or None, model, default_specs(T), "specs")
    elif not specs or not all(isinstance(spec, SamplerSpec) for spec in specs):
        raise SpriteDiffError("specs must be a spec string like 'ddpm:500,ddim:20' or a non-empty list of SamplerSpec")
    if reference not in (None, "diffusers"):
        raise SpriteDiffError(f"unknown reference {reference!r}; the one reference is diffusers")
    device = resolve_device(str(device) if device is not None else None)
    resolved = list(dict.fromkeys(resolve_precision(p, device, rows=n) for p in precisions))
    rows = []
    for spec in specs:
        for precision in resolved:
            if progress:
                print(f"timing {spec.label} {precision} ({repeat} runs after 1 warm-up) ...", file=sys.stderr,
                      flush=True)
            rows.append(time_spec(model, spec, n, device, repeat, seed, fast, precision))
        if reference and spec.name == "ddim" and not spec.options:
            rows.append(time_diffusers(model, spec, n, device, repeat, seed, resolved, fast))
    baseline = next(i for i, row in enumerate(rows) if row.spec == specs[baseline_index(specs, T)])
    set_speedups(rows, baseline)
    return BenchReport(rows, baseline, n, repeat, model.path or "default", environment(device))


def time_spec(model: SpriteModel, spec: SamplerSpec, n: int, device: torch.device, repeat: int,
              seed: int = 0, fast: bool = True, precision: str = "fp32") -> BenchRow:
    """One warm-up run, then `repeat` pairs of (sampler run, NFE bare calls). A run's time is sample()'s own
    `seconds`: its sampling loop, without the one-off preparation of the net (folding, a CUDA graph)."""

    def run():
        return sample(model, spec.name, spec.steps, n, seed=seed, device=device, batch_size=n, frames=False,
                      fast=fast, precision=precision, **spec.options)

    nfe = run().nfe
    bare = bare_calls(model, nfe, n, device, fast, precision)
    bare_calls(model, 1, n, device, fast, precision)()  # the net itself is warm from the sampler's warm-up run
    times, bare_times = [], []
    for _ in range(repeat):
        times.append(run().seconds)
        bare_times.append(timed(bare, device))
    return BenchRow(spec, n, nfe, times, bare_times, precision=precision)


def time_diffusers(model: SpriteModel, spec: SamplerSpec, n: int, device: torch.device, repeat: int, seed: int,
                   precisions: Sequence[str], fast: bool) -> BenchRow:
    """diffusers' DDIM loop on the plain fp32 net (as stored), from sample()'s noise for this seed: one warm-up,
    then `repeat` timed runs; its max difference from sample() at each precision."""
    from .reference import diffusers_ddim, diffusers_ddim_loop

    engine = Engine(model, device, fast=False)
    eps_fn = engine.eps().eps_fn
    x_T = engine.noise(seed, 0, n)[1]
    scheduler = diffusers_ddim(model.schedule)
    theirs = to_uint8(diffusers_ddim_loop(scheduler, eps_fn, x_T, spec.steps))
    times = [timed(lambda: diffusers_ddim_loop(scheduler, eps_fn, x_T, spec.steps), device) for _ in range(repeat)]
    bare = bare_calls(model, spec.steps, n, device, fast=False, precision="fp32")
    bare_times = [timed(bare, device) for _ in range(repeat)]
    max_diff = {}
    for precision in precisions:
        ours = sample(model, "ddim", spec.steps, n, seed=seed, device=device, batch_size=n, frames=False,
                      fast=fast, precision=precision).images
        max_diff[precision] = int(abs(ours.astype(int) - theirs.astype(int)).max())
    return BenchRow(spec, n, spec.steps, times, bare_times, reference="diffusers", max_diff=max_diff)


def bare_calls(model: SpriteModel, nfe: int, n: int, device: torch.device, fast: bool = True,
               precision: str = "fp32"):
    """A function that calls the denoiser nfe times on one fixed (n,C,H,W) batch at t = T/2, no context,
    through the same inference path as sample(..., fast=fast, precision=precision)."""
    engine = Engine(model, device, fast, resolve_precision(precision, device, rows=n))
    x = torch.randn((n, *engine.shape), generator=torch.Generator().manual_seed(0)).to(device)
    denoiser = engine.eps(example_x=x).eps_fn  # the CUDA graph when fast on CUDA, as sample() runs it
    t = torch.full((n,), model.schedule.T // 2, dtype=torch.long, device=device)

    def calls() -> None:
        for _ in range(nfe):
            denoiser(x, t)

    return calls


def timed(fn, device: torch.device) -> float:
    """Wall seconds of fn(), with the GPU's queued work finished before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict:
    """Where the numbers were measured: machine, CPU or GPU, torch, threads, date (UTC)."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"machine": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": str(device), "device_name": device_name,
            "threads": torch.get_num_threads(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
