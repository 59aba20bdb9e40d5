"""Every number of docs/solvers.md, recomputed from scratch on the Gaussian-mixture oracle of tests/oracle.py.

    OMP_NUM_THREADS=1 python benchmarks/solver_tables.py --out docs/eval/solver_tables.json

Writes the JSON and prints the tables as markdown. The settings are those of tests/test_solvers.py and
tests/test_diffusers_agreement.py (whose helpers it imports, so both measure the same thing):
- errors: max abs error over 64 samples x_T ~ N(0, I) (seed 0), GaussianMixture.small(std), course schedule,
  against the exact ODE solution to ab = 1 ("to t = 0") unless a row says "to t = 1" (the ODE to ab(1), then
  the final denoise x0_hat at t = 1: the reference of the measured orders);
- orders: log-log slope of those errors against the steps;
- agreement with diffusers: max abs difference over the tests' 16 samples (seed 0, std 0.3);
- diffusers' by-design differences: on the 64 samples above.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracle and the tests' helpers

from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,  # noqa: E402
                       HeunDiscreteScheduler, PNDMScheduler, UniPCMultistepScheduler)
from oracle import GaussianMixture  # noqa: E402
from test_diffusers_agreement import (diffusers_model, dpm_solver, max_diff, run_scheduler,  # noqa: E402
                                      their_timesteps, trained_betas, unipc)
from test_solvers import FINE_STEPS, ORDER_CASES, ORDER_STEPS, Case, hand_grid  # noqa: E402

from spritediff.samplers import SAMPLERS  # noqa: E402
from spritediff.samplers.common import call_eps, predict_x0  # noqa: E402
from spritediff.samplers.dpmpp import exp_weights  # noqa: E402
from spritediff.schedule import Schedule  # noqa: E402

warnings.filterwarnings("ignore")
GRIDS = ("logsnr", "karras", "linspace", "trailing")
SOLVERS = ("euler", "heun", "dpmpp-2m", "dpmpp-3m", "unipc", "plms")
DEFAULTS = ("ddim", "euler", "heun", "dpmpp-2m", "dpmpp-3m", "unipc", "plms")


def err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref).abs().max().item()


def slope(steps, errors) -> float:
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])


def run(case: Case, name: str, steps: int, **options) -> torch.Tensor:
    return SAMPLERS[name](case.eps, case.x_T, case.schedule, steps=steps, **options)


def label(name: str, options: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in options.items())


# ---- our solvers on the oracle -----------------------------------------------------------------------------

def grid_table(c3: Case) -> dict:
    table = {g: {n: err(run(c3, n, 10, spacing=g), c3.to_t0) for n in SOLVERS} for g in GRIDS}
    table["trailing"]["ddim"] = err(run(c3, "ddim", 10), c3.to_t0)
    table["euler_equals_ddim"] = max(max_diff(run(c3, "euler", 10, spacing=g), run(c3, "ddim", 10, spacing=g))
                                     for g in GRIDS)
    table["unipc order 3 without corrector vs dpmpp-3m (5, 14 steps, every grid)"] = max(
        max_diff(run(c3, "unipc", s, order=3, corrector=False, spacing=g), run(c3, "dpmpp-3m", s, spacing=g))
        for g in ("karras", "logsnr", "trailing") for s in (5, 14))
    return table


def heun_grids(cases: dict) -> dict:
    return {f"std {std}, {s} steps": {g: err(run(c, "heun", s, spacing=g), c.to_t0) for g in ("linspace", "karras")}
            for std, c in cases.items() for s in (10, 20)}


def defaults(c3: Case) -> dict:
    return {f"{s} steps": {n: err(run(c3, n, s), c3.to_t0) for n in DEFAULTS} for s in (10, 20)}


def trailing_and_rounding(cases: dict) -> dict:
    c3, c5 = cases[0.3], cases[0.5]
    out = {"final denoise at t = 1 vs ODE end point (std 0.3)": err(c3.to_t1, c3.to_t0)}
    e = [err(run(c5, "dpmpp-2m", s, spacing="trailing"), c5.to_t0) for s in (100, 250)]
    out["dpmpp-2m trailing, local slope 100..250 steps (std 0.5)"] = slope((100, 250), e)
    for std, c in cases.items():
        e = [err(run(c, "dpmpp-3m", s, spacing="trailing"), c.to_t0) for s in ORDER_STEPS]
        out[f"dpmpp-3m trailing, slope 12..32 steps (std {std})"] = slope(ORDER_STEPS, e)
    schedule = Schedule.course()
    out["lambda(1) - lambda(2), the span of one integer step near t = 1"] = schedule.log_snr(1) - schedule.log_snr(2)
    for steps in (40, 80):
        grid = schedule.timesteps(steps, "logsnr")[:-1]
        out[f"logsnr points pushed apart at {steps} steps"] = sum(a != b for a, b in zip(grid, hand_grid("logsnr", steps)))
    for spacing in ("karras", "logsnr"):
        s = 1
        while len(set(hand_grid(spacing, s + 1))) == s + 1:
            s += 1
        out[f"{spacing}: most steps with no rounding collision"] = s
    for name, c in (("dpmpp-3m", c5), ("unipc", c5), ("dpmpp-2m", c3)):
        e = [err(run(c, name, s), c.to_t1) for s in (56, 64, 80)]
        out[f"{name} local slopes 56..64, 64..80 (std {c.gm.std}, to t = 1)"] = [slope((56, 64), e[:2]),
                                                                                  slope((64, 80), e[1:])]
    return out


def orders(c5: Case, fine: Case, c3: Case) -> dict:
    out = {}
    for name, options, expected in ORDER_CASES:
        out[label(name, options)] = {
            "expected": expected,
            "course, std 0.5, 12..32": c5.measured_order(name, options, ORDER_STEPS)[0],
            "T = 5000, std 0.3, 32..256": fine.measured_order(name, options, FINE_STEPS)[0],
            "course, std 0.3, 12..32": c3.measured_order(name, options, ORDER_STEPS)[0],
        }
    return out


# ---- diffusers ------------------------------------------------------------------------------------------------

def loop(scheduler, model, x: torch.Tensor, scale_input: bool = False, **step_kwargs) -> torch.Tensor:
    for j in scheduler.timesteps:
        model_in = scheduler.scale_model_input(x, j) if scale_input else x
        x = scheduler.step(model(model_in, j), j, x, **step_kwargs).prev_sample
    return x


def their_3m(case: Case, steps: int) -> torch.Tensor:
    ts = case.schedule.timesteps(steps, "logsnr")
    return run_scheduler(dpm_solver(case.schedule, 3, ts), case.eps, case.x_T)[0]


def agreement() -> dict:
    """The max differences of tests/test_diffusers_agreement.py (16 samples, std 0.3, seed 0)."""
    schedule, gm = Schedule.course(), GaussianMixture.small()
    eps_fn = gm.eps_fn(schedule)
    x_T = torch.randn((16, 1, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    betas = trained_betas(schedule)
    out = {"alphas_cumprod max relative difference": (
        (DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=betas).alphas_cumprod.double()
         / schedule.alphas_cumprod[1:] - 1).abs().max().item())}

    def ddim(steps):
        s = DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=betas, clip_sample=False,
                          set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing")
        s.set_timesteps(steps)
        return max_diff(run_scheduler(s, eps_fn, x_T, eta=0.0)[0], SAMPLERS["ddim"](eps_fn, x_T, schedule, steps=steps))
    out["ddim"] = max(ddim(s) for s in (10, 20, 25))

    two_m = []
    for spacing in ("logsnr", "karras", "trailing"):
        for steps in (10, 20):
            ts = schedule.timesteps(steps, spacing)
            theirs = run_scheduler(dpm_solver(schedule, 2, ts), eps_fn, x_T)[0]
            two_m.append(max_diff(theirs, SAMPLERS["dpmpp-2m"](eps_fn, x_T, schedule, steps=steps, spacing=spacing)))
    out["dpmpp-2m"], out["dpmpp-2m smallest"] = max(two_m), min(two_m)
    ts = schedule.timesteps(20, "trailing")
    scheduler = dpm_solver(schedule, 2, ts)
    scheduler.sigmas = torch.tensor([schedule.sigma(t) for t in ts[:-1]] + [0.0], dtype=torch.float64)
    out["dpmpp-2m trailing 20, float32 sigmas"] = two_m[-1]
    out["dpmpp-2m trailing 20, float64 sigmas"] = max_diff(
        run_scheduler(scheduler, eps_fn, x_T)[0], SAMPLERS["dpmpp-2m"](eps_fn, x_T, schedule, steps=20,
                                                                         spacing="trailing"))

    low, third_residual = 0.0, 0.0
    for steps in (10, 20):
        ts = schedule.timesteps(steps, "logsnr")
        states, x0s = [], []
        states.append(x_T)
        final = SAMPLERS["dpmpp-3m"](eps_fn, x_T, schedule, steps=steps,
                                     callback=lambda info: (states.append(info.x_t), x0s.append(info.x0_hat)))
        states = states[1:] + [final]
        scheduler, model = dpm_solver(schedule, 3, ts), diffusers_model(eps_fn)
        lambdas = [schedule.log_snr(t) for t in ts]
        for i, j in enumerate(scheduler.timesteps):
            theirs = scheduler.step(model(states[i], j), j, states[i]).prev_sample
            if not (i >= 2 and ts[i + 1] > 0 and not (steps < 15 and i == steps - 2)):
                low = max(low, max_diff(theirs, states[i + 1]))
                continue
            l0, l1, l2 = lambdas[i], lambdas[i - 1], lambdas[i - 2]
            dd = ((x0s[i] - x0s[i - 1]) / (l0 - l1) - (x0s[i - 1] - x0s[i - 2]) / (l1 - l2)) / (l0 - l2)
            predicted = math.sqrt(schedule.alpha_bar(ts[i + 1])) * exp_weights(lambdas[i + 1] - l0)[2] * dd
            third_residual = max(third_residual, max_diff(states[i + 1] - theirs, predicted))
    out["dpmpp-3m order-1/2 steps"], out["dpmpp-3m order-3 steps minus predicted"] = low, third_residual
    out["dpmpp-3m"] = max(low, third_residual)

    out["unipc"] = max(
        max_diff(run_scheduler(unipc(schedule, order, schedule.timesteps(10, spacing), spacing), eps_fn, x_T)[0],
                 SAMPLERS["unipc"](eps_fn, x_T, schedule, steps=10, order=order, spacing=spacing))
        for order in (1, 2, 3) for spacing in ("logsnr", "trailing"))

    for name, cls in (("euler", EulerDiscreteScheduler), ("heun", HeunDiscreteScheduler)):
        diffs = []
        for spacing in ("karras", "logsnr"):
            ts = schedule.timesteps(10, spacing)
            kwargs = {"final_sigmas_type": "zero", "interpolation_type": "linear"} if name == "euler" else {}
            scheduler = cls(num_train_timesteps=schedule.T, trained_betas=betas, **kwargs)
            scheduler.set_timesteps(timesteps=their_timesteps(ts))
            x_ve = x_T * math.sqrt(1.0 + schedule.sigma(ts[0]) ** 2)
            theirs = run_scheduler(scheduler, eps_fn, x_ve, scale_input=True)[0]
            diffs.append(max_diff(theirs, SAMPLERS[name](eps_fn, x_T, schedule, steps=10, spacing=spacing)))
        out[name] = max(diffs)

    pndm, pndm_final = [], []
    for steps in (10, 20):
        scheduler = PNDMScheduler(num_train_timesteps=schedule.T, trained_betas=betas, skip_prk_steps=True,
                                  set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing")
        scheduler.set_timesteps(steps)
        theirs, seen = run_scheduler(scheduler, eps_fn, x_T)
        infos = []
        SAMPLERS["plms"](eps_fn, x_T, schedule, steps=steps, spacing="trailing", warmup="heun", callback=infos.append)
        pndm.append(max(max_diff(a, info.x_t) for a, info in zip([seen[0]] + seen[2:], infos)))
        eps = [call_eps(eps_fn, info.x_t, info.t) for info in infos[-4:]]
        eps_prime = (55 * eps[3] - 59 * eps[2] + 37 * eps[1] - 9 * eps[0]) / 24
        pndm_final.append(max_diff(theirs, predict_x0(infos[-1].x_t, eps_prime, schedule.alpha_bar(infos[-1].t))))
    out["plms"] = max(pndm)
    out["plms final step against the Adams-Bashforth formula"] = max(pndm_final)
    return out


def continuous_model(case: Case):
    """A continuous-time model: the oracle's eps at the ab of a fractional diffusers index j (log sigma
    interpolated linearly between the integers, as diffusers maps sigmas to t)."""
    log_sigma = np.log(case.schedule.sigmas()[1:].numpy())

    def model(x, j):
        ls = float(np.interp(float(j), np.arange(len(log_sigma)), log_sigma))
        ab = torch.full((len(x),), 1.0 / (1.0 + math.exp(2 * ls)), dtype=torch.float64)
        return case.gm.eps_from_ab(x.double(), ab)

    return model


def by_design(c3: Case, c5: Case, fine: Case) -> dict:
    schedule, betas = c3.schedule, trained_betas(c3.schedule)
    T = schedule.T
    out = {}
    # 3M: diffusers' half-weight x0'' term
    out["diffusers 3m order, course std 0.5, 12..32 (to t = 1)"] = slope(
        ORDER_STEPS, [err(their_3m(c5, s), c5.to_t1) for s in ORDER_STEPS])
    fine_errors = [err(their_3m(fine, s), fine.to_t1) for s in FINE_STEPS]
    out["diffusers 3m order, T = 5000 std 0.3, 32..256 (to t = 1)"] = slope(FINE_STEPS, fine_errors)
    out["256 fine steps error (to t = 1): diffusers 3m, ours"] = [fine_errors[-1],
                                                                  err(run(fine, "dpmpp-3m", 256), fine.to_t1)]
    out["logsnr error (std 0.3): diffusers 3m, ours"] = {
        s: [err(their_3m(c3, s), c3.to_t0), err(run(c3, "dpmpp-3m", s), c3.to_t0)] for s in (10, 20, 24, 28, 32)}
    out["free-running difference"] = {s: max_diff(their_3m(c3, s), run(c3, "dpmpp-3m", s)) for s in (10, 20)}

    # spacing: diffusers' defaults
    for steps in (10, 20):
        row = {}
        for name, order in (("dpmpp-2m", 2), ("dpmpp-3m", 3)):
            s = DPMSolverMultistepScheduler(num_train_timesteps=T, trained_betas=betas, solver_order=order)
            s.set_timesteps(steps)
            row[name] = err(run_scheduler(s, c3.eps, c3.x_T)[0], c3.to_t0)
            row["last model t"] = int(s.timesteps[-1]) + 1
        s = UniPCMultistepScheduler(num_train_timesteps=T, trained_betas=betas)
        s.set_timesteps(steps)
        row["unipc"] = err(run_scheduler(s, c3.eps, c3.x_T)[0], c3.to_t0)
        out[f"diffusers default linspace spacing, {steps} steps"] = row
    s = DDIMScheduler(num_train_timesteps=T, trained_betas=betas)
    s.set_timesteps(10)
    out["DDIM leading, first t at 10 steps"] = int(s.timesteps[0]) + 1
    s = PNDMScheduler(num_train_timesteps=T, trained_betas=betas, skip_prk_steps=True)
    s.set_timesteps(10)
    out["PNDM defaults (leading, set_alpha_to_one=False), 10 steps: error, ours plms"] = [
        err(run_scheduler(s, c3.eps, c3.x_T)[0], c3.to_t0), err(run(c3, "plms", 10), c3.to_t0)]
    same = []
    for steps in (10, 20):
        s = DPMSolverMultistepScheduler(num_train_timesteps=T, trained_betas=betas, use_karras_sigmas=True)
        s.set_timesteps(steps)
        same.append(s.timesteps.tolist() == their_timesteps(schedule.timesteps(steps, "karras")))
    out["use_karras_sigmas rounds t as our karras grid (10, 20 steps)"] = all(same)

    # final step: PNDM's Adams-Bashforth eps' on the last jump
    for steps in (10, 20):
        s = PNDMScheduler(num_train_timesteps=T, trained_betas=betas, skip_prk_steps=True, set_alpha_to_one=True,
                          steps_offset=0, timestep_spacing="trailing")
        s.set_timesteps(steps)
        theirs = run_scheduler(s, c3.eps, c3.x_T)[0]
        ours = run(c3, "plms", steps, spacing="trailing", warmup="heun")
        out[f"PNDM trailing {steps} steps: error, ours (warmup heun), difference"] = [
            err(theirs, c3.to_t0), err(ours, c3.to_t0), max_diff(theirs, ours)]

    # clipping
    results = {}
    for clip in (True, False):
        s = DDIMScheduler(num_train_timesteps=T, trained_betas=betas, clip_sample=clip, set_alpha_to_one=True,
                          steps_offset=0, timestep_spacing="trailing")
        s.set_timesteps(10)
        results[clip] = run_scheduler(s, c3.eps, c3.x_T, eta=0.0)[0]
    out["DDIM clip_sample, 10 steps: moved by, error clipped, error unclipped"] = [
        max_diff(results[True], results[False]), err(results[True], c3.to_t0), err(results[False], c3.to_t0)]

    # sigma handling with use_karras_sigmas
    model = continuous_model(c3)
    for name, cls, kwargs in (("euler", EulerDiscreteScheduler, {"final_sigmas_type": "zero"}),
                              ("heun", HeunDiscreteScheduler, {})):
        s = cls(num_train_timesteps=T, trained_betas=betas, use_karras_sigmas=True, **kwargs)
        s.set_timesteps(10)
        x_ve = c3.x_T * math.sqrt(1.0 + schedule.sigma(T) ** 2)
        theirs = loop(s, model, x_ve, scale_input=True)
        ours = run(c3, name, 10)
        out[f"{name} use_karras_sigmas, 10 steps: difference, error theirs, error ours"] = [
            max_diff(theirs, ours), err(theirs, c3.to_t0), err(ours, c3.to_t0)]
        if name == "euler":
            out["use_karras_sigmas: smallest two fractional diffusers timesteps"] = sorted(
                float(j) for j in s.timesteps if float(j) != round(float(j)))[:2]
    for steps in (10, 20):
        s = DPMSolverMultistepScheduler(num_train_timesteps=T, trained_betas=betas, use_karras_sigmas=True)
        s.set_timesteps(steps)
        theirs = run_scheduler(s, c3.eps, c3.x_T)[0]
        ours = run(c3, "dpmpp-2m", steps, spacing="karras")
        out[f"dpmpp-2m use_karras_sigmas {steps} steps: difference, error theirs, error ours"] = [
            max_diff(theirs, ours), err(theirs, c3.to_t0), err(ours, c3.to_t0)]
    return out


# ---- output -------------------------------------------------------------------------------------------------

def g(v: float) -> str:
    return f"{v:.3f}" if abs(v) >= 0.01 else f"{v:.1e}"


def markdown(r: dict) -> str:
    lines = ["| grid | euler (= ddim) | heun | dpmpp-2m | dpmpp-3m | unipc | plms |", "|---|" + "---|" * 6]
    for grid in GRIDS:
        row = r["grid_table"][grid]
        first = g(row["euler"]) + (f" / {g(row['ddim'])} (ddim)" if grid == "trailing" else "")
        lines.append(f"| {grid} | {first} | " + " | ".join(g(row[n]) for n in SOLVERS[1:]) + " |")
    lines += ["", "| sampler | expected | course, std 0.5, 12..32 | T = 5000, std 0.3, 32..256 | course, std 0.3 |",
              "|---|---|---|---|---|"]
    for name, row in r["orders"].items():
        lines.append(f"| {name} | {row['expected']:g} | {row['course, std 0.5, 12..32']:.2f} | "
                     f"{row['T = 5000, std 0.3, 32..256']:.2f} | {row['course, std 0.3, 12..32']:.2f} |")
    lines += ["", "| diffusers agreement | max abs difference (16 samples) |", "|---|---|"]
    lines += [f"| {k} | {v:.1e} |" for k, v in r["agreement"].items()]
    for section in ("heun_grids", "defaults", "trailing_and_rounding", "by_design"):
        lines += ["", f"{section}:"] + [f"- {k}: {v}" for k, v in r[section].items()]
    return "\n".join(lines)


def rounded(obj):
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {str(k): rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v) for v in obj]
    return obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/eval/solver_tables.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    cases = {0.3: Case(Schedule.course(), 0.3), 0.5: Case(Schedule.course(), 0.5)}
    fine = Case(Schedule.course(5000, 1e-5, 2e-3), 0.3)
    results = {
        "grid_table": grid_table(cases[0.3]),
        "heun_grids": heun_grids(cases),
        "defaults": defaults(cases[0.3]),
        "trailing_and_rounding": trailing_and_rounding(cases),
        "orders": orders(cases[0.5], fine, cases[0.3]),
        "agreement": agreement(),
        "by_design": by_design(cases[0.3], cases[0.5], fine),
    }
    results = rounded(results)  # no timing in the file: a rerun writes the same bytes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    print(f"\n{time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
