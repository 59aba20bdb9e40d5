"""UniPC (Zhao et al. 2023), multistep, data prediction: the predictor UniP-p and the corrector UniC-p.

In DPM-Solver++'s form (dpmpp.py) a step from s (x_s, model output m_0 = x0_hat at lambda_s) to t is
    x_t = (std_t / std_s) x_s + alpha_t (w_0 m_0 + B(h) sum_m rho_m D_m),   D_m = (m_m - m_0) / r_m,
over other points m_m at lambda_s + r_m h. Matching the Taylor terms k = 1..K of the exact solution
alpha_t sum_k w_k x0^(k) gives the linear system sum_m rho_m r_m^(k-1) = k! w_k / (h^k B(h)), k = 1..K.
The predictor UniP-p uses the p - 1 earlier points (r_m < 0), order p. Once the model has been called at the
predicted x_t, the corrector UniC-p redoes the step with the new point too (r = 1, m_t), order p + 1, and the next
step reuses that model output: the corrector costs no model call. B(h) = 1 - e^-h (bh2) or h (bh1).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..schedule import Schedule
from .common import EpsFn, Generator, StepInfo, call_eps, predict_x0, sampler_grid
from .registry import VARIANTS
from .dpmpp import exp_weights


def unipc_rhos(rs: list[float], h: float, b_h: float) -> list[float]:
    """rho solving sum_m rho_m r_m^(k-1) = k! w_k / (h^k B(h)) for k = 1..len(rs).

    A single coefficient is set to 1/2, its limit as h -> 0 (what the reference implementations use); the
    difference is O(h) on a term that is already O(h^2), so the order is unchanged.
    """
    if len(rs) == 1:
        return [0.5]
    w = exp_weights(h, len(rs) + 1)
    powers = np.array([[r ** (k - 1) for r in rs] for k in range(1, len(rs) + 1)])
    targets = np.array([math.factorial(k) * w[k] / (h**k * b_h) for k in range(1, len(rs) + 1)])
    return np.linalg.solve(powers, targets).tolist()


def unipc_update(x: torch.Tensor, lambdas: list[float], x0s: list[torch.Tensor], lambda_next: float,
                 ab_now: float, ab_next: float, variant: str = "bh2",
                 x0_next: torch.Tensor | None = None) -> torch.Tensor:
    """One step from the newest point lambdas[-1] (state x) to lambda_next (finite).

    lambdas, x0s: log-SNR and x0_hat (B,C,H,W) of the last p model calls, oldest first. Without x0_next this is
    the predictor UniP-p; with x0_next, the x0_hat at lambda_next, it is the corrector UniC-p.
    """
    alpha_next, std_next, std_now = math.sqrt(ab_next), math.sqrt(1.0 - ab_next), math.sqrt(1.0 - ab_now)
    h = lambda_next - lambdas[-1]
    m0 = x0s[-1]
    rs = [(lam - lambdas[-1]) / h for lam in lambdas[:-1]]
    diffs = [(m - m0) / r for r, m in zip(rs, x0s[:-1])]
    if x0_next is not None:
        rs.append(1.0)
        diffs.append(x0_next - m0)
    w0 = -math.expm1(-h)
    x_next = (std_next / std_now) * x + alpha_next * w0 * m0
    if diffs:
        b_h = w0 if variant == "bh2" else h
        rhos = unipc_rhos(rs, h, b_h)
        x_next = x_next + alpha_next * b_h * sum(rho * d for rho, d in zip(rhos, diffs))
    return x_next


def sample_unipc(eps_fn: EpsFn, x_T: torch.Tensor, schedule: Schedule, steps: int = 10, order: int = 2,
                 spacing: str = "logsnr", variant: str = "bh2", corrector: bool = True,
                 lower_order_final: bool = True, generator: Generator = None, callback=None,
                 timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """UniPC-p (p = order, 1-3) over `steps` model calls: UniP-p then UniC-p at every step but the last.

    Warm-up at orders 1, 2, ...; lower_order_final: step i uses order <= steps - i (as diffusers). The final step
    to t = 0 is x0_hat, with no corrector after it. corrector=False gives UniP alone (UniP-2 with bh2 is
    DPM-Solver++(2M)). Deterministic: generator is unused. The callback's x_t is the predicted state the model
    was called at (x0_hat's input); the final x0 is that call's x0_hat, as the corrected state has weight 0 there.
    timesteps: a grid of the caller's instead of (steps, spacing) (common.sampler_grid); steps = len(timesteps) - 1.
    x_T: (B,C,H,W) standard normal. Returns x at t = 0, same shape and dtype.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}; choose from {', '.join(VARIANTS)}")
    ts = sampler_grid(schedule, steps, spacing, timesteps)
    steps = len(ts) - 1
    x = x_T
    lambdas: list[float] = []
    x0s: list[torch.Tensor] = []
    last = None  # (state, alpha_bar, order) the last predictor started from
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        ab_t, lambda_t = schedule.alpha_bar(t), schedule.log_snr(t)
        x0_hat = predict_x0(x, call_eps(eps_fn, x, t), ab_t)
        if callback is not None:
            callback(StepInfo(i, t, x, x0_hat))
        if corrector and last is not None:
            x_s, ab_s, p = last
            x = unipc_update(x_s, lambdas[-p:], x0s[-p:], lambda_t, ab_s, ab_t, variant, x0_next=x0_hat)
        lambdas, x0s = (lambdas + [lambda_t])[-order:], (x0s + [x0_hat])[-order:]
        if s == 0:
            x = x0_hat
            continue
        p = min(order, len(x0s), steps - i) if lower_order_final else len(x0s)
        last = (x, ab_t, p)
        x = unipc_update(x, lambdas[-p:], x0s[-p:], schedule.log_snr(s), ab_t, schedule.alpha_bar(s), variant)
    return x
