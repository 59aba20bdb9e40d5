"""DPM-Solver++ (Lu et al. 2022), multistep, data prediction: 2M and 3M.

Over lambda = log(alpha / std) (alpha = sqrt(ab), std = sqrt(1 - ab), the VP view's noise std; docs/design.md,
section 4.9) the probability-flow ODE has the exact
solution x_t = (std_t / std_s) x_s + std_t * integral_{lambda_s}^{lambda_t} e^lambda x0(lambda) dlambda.
Writing x0(lambda_s + tau) = sum_k x0^(k) tau^k / k! and h = lambda_t - lambda_s, the integral is
alpha_t * sum_k w_k(h) x0^(k), with w_0 = 1 - e^-h and w_k = h^k / k! - w_{k-1}:
    x_t = (std_t / std_s) x_s + alpha_t (w_0 x0 + w_1 x0' + w_2 x0'' + ...).
The multistep solvers estimate x0' (and x0'') from the x0_hat of earlier steps, so each step costs one model call.
Every step uses the exact alpha, std, lambda of the integer t the model is called at.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..schedule import Schedule
from .common import EpsFn, Generator, StepInfo, call_eps, predict_x0, sampler_grid


def exp_weights(h: float, n: int = 3) -> list[float]:
    """[w_0, ..., w_{n-1}]: w_k = integral_0^h e^-(h - tau) tau^k / k! dtau, the weight of x0^(k) in a step of h.

    w_0 = 1 - e^-h and w_k = h^k / k! - w_{k-1} (w_k ~ h^(k+1) / (k+1)! for small h). The subtractions lose a few
    of float64's digits at small h, far below anything a solver can see.
    """
    weights = [-math.expm1(-h)]
    for k in range(1, n):
        weights.append(h**k / math.factorial(k) - weights[-1])
    return weights


def dpmpp_update(x: torch.Tensor, lambdas: list[float], x0s: list[torch.Tensor], lambda_next: float,
                 ab_now: float, ab_next: float) -> torch.Tensor:
    """One multistep step from the newest point lambdas[-1] to lambda_next (finite), order len(x0s) <= 3.

    lambdas: log-SNR of the last 1-3 model calls, oldest first; x0s: their x0_hat, each (B,C,H,W).
    Order 1 is DDIM. Order 2 is the 2M of docs/design.md, section 4.9:
    D = (1 + 1/(2r)) x0_0 - 1/(2r) x0_1, r = h_prev / h.
    Order 3 integrates the quadratic through the three x0_hat exactly: derivatives at lambdas[-1] from Newton's
    divided differences in lambda, then w0 x0 + w1 x0' + w2 x0''.
    """
    alpha_next, std_next, std_now = math.sqrt(ab_next), math.sqrt(1.0 - ab_next), math.sqrt(1.0 - ab_now)
    h = lambda_next - lambdas[-1]
    w0, w1, w2 = exp_weights(h)
    x0 = x0s[-1]
    if len(x0s) == 1:
        data_term = w0 * x0
    elif len(x0s) == 2:
        r = (lambdas[-1] - lambdas[-2]) / h
        data_term = w0 * (x0 + (x0 - x0s[-2]) / (2 * r))
    else:
        l0, l1, l2 = lambdas[-1], lambdas[-2], lambdas[-3]
        dd_01 = (x0 - x0s[-2]) / (l0 - l1)
        dd_12 = (x0s[-2] - x0s[-3]) / (l1 - l2)
        dd_012 = (dd_01 - dd_12) / (l0 - l2)
        data_term = w0 * x0 + w1 * (dd_01 + (l0 - l1) * dd_012) + w2 * (2 * dd_012)
    return (std_next / std_now) * x + alpha_next * data_term


def sample_dpmpp(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 10, order: int = 2,
                 spacing: str = "logsnr", lower_order_final: bool = True, generator: Generator = None,
                 callback=None, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """DPM-Solver++ multistep of `order` 1-3 over `steps` model calls (deterministic: generator is unused).
    timesteps: a grid of the caller's instead of (steps, spacing) (common.sampler_grid); steps = len(timesteps) - 1.

    The first steps warm up at orders 1, 2, ...; the final step to t = 0 (lambda = inf) is x0_hat, the limit of
    every order. lower_order_final: with fewer than 15 steps, step i uses order <= steps - i (so 3M takes its
    second-to-last step at order 2), as diffusers does for stability at few steps.
    x_T: (B,C,H,W) standard normal. Returns x at t = 0, same shape and dtype.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order}")
    ts = sampler_grid(schedule, steps, spacing, timesteps)
    steps = len(ts) - 1
    x = x_T
    lambdas: list[float] = []
    x0s: list[torch.Tensor] = []
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        ab_t = schedule.alpha_bar(t)
        x0_hat = predict_x0(x, call_eps(eps_fn, x, t), ab_t)
        if callback is not None:
            callback(StepInfo(i, t, x, x0_hat))
        lambdas, x0s = (lambdas + [schedule.log_snr(t)])[-order:], (x0s + [x0_hat])[-order:]
        if s == 0:
            x = x0_hat
            continue
        n = min(order, len(x0s), steps - i) if lower_order_final and steps < 15 else len(x0s)
        x = dpmpp_update(x, lambdas[-n:], x0s[-n:], schedule.log_snr(s), ab_t, schedule.alpha_bar(s))
    return x


def sample_dpmpp_2m(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 10,
                    spacing: str = "logsnr", lower_order_final: bool = True, generator: Generator = None,
                    callback=None, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """DPM-Solver++(2M): second order, one model call a step. See sample_dpmpp."""
    return sample_dpmpp(eps_fn, x_T, schedule, steps, 2, spacing, lower_order_final, generator, callback, timesteps)


def sample_dpmpp_3m(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 10,
                    spacing: str = "logsnr", lower_order_final: bool = True, generator: Generator = None,
                    callback=None, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """DPM-Solver++(3M): third order, one model call a step. See sample_dpmpp."""
    return sample_dpmpp(eps_fn, x_T, schedule, steps, 3, spacing, lower_order_final, generator, callback, timesteps)
