"""Time diffusers' DDIMScheduler loop on a spritediff model, as a reference row beside `spritediff bench`.

    python benchmarks/diffusers_loop.py [--model PATH] [--steps 20] [--n 32] [--device cpu] [--repeat 5]

Prints JSON: median seconds of the loop (model calls + scheduler steps), and the max difference from
spritediff's own DDIM on the same noise (they run the same algorithm on the same timesteps).
diffusers index j is spritediff's t = j + 1; trained_betas = [1 - ab_1, b_2, ..., b_T] reproduce our
alphas_cumprod (see docs/solvers.md).
"""
import argparse
import json
import statistics
import time

import torch
from diffusers import DDIMScheduler

import spritediff
from spritediff.denoiser import Denoiser
from spritediff.samplers import SAMPLERS
from spritediff.sampling import initial_noise, resolve_device, sample_generators


def diffusers_ddim(schedule) -> DDIMScheduler:
    ab = schedule.alphas_cumprod
    betas = torch.cat([1 - ab[1:2], schedule.betas[2:]]).float()
    return DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=betas.numpy(), clip_sample=False,
                         set_alpha_to_one=True, timestep_spacing="trailing")


def run_loop(scheduler, eps_fn, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    x = x_T
    for j in scheduler.timesteps:
        t = torch.full((len(x),), int(j) + 1, device=x.device)
        x = scheduler.step(eps_fn(x, t), j, x).prev_sample
    return x


def timed(fn, device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = spritediff.load(args.model)
    eps_fn = Denoiser(model.net.to(device).eval(), model.schedule)
    x_T = initial_noise(sample_generators(0, args.n), (3, model.net.height, model.net.height)).to(device)
    scheduler = diffusers_ddim(model.schedule)
    theirs = run_loop(scheduler, eps_fn, x_T, args.steps)  # warm-up, and the result to compare
    ours = SAMPLERS["ddim"](eps_fn, x_T, model.schedule, steps=args.steps)
    times = [timed(lambda: run_loop(scheduler, eps_fn, x_T, args.steps), device) for _ in range(args.repeat)]
    print(json.dumps({"loop": f"diffusers DDIMScheduler, {args.steps} steps (trailing)", "n": args.n,
                      "device": str(device), "seconds": statistics.median(times),
                      "max_abs_diff_vs_spritediff_ddim": float((theirs - ours).abs().max())}, indent=2))


if __name__ == "__main__":
    main()
