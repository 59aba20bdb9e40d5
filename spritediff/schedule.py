"""The noise schedule: betas, alphas_cumprod, timestep grids and the sigma/lambda views.

Time is an integer t in 0..T; t = 0 is clean data (alpha_bar = 1). All tables are float64 on the
CPU; samplers index them with Python ints and cast to the image dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .checks import SPACINGS



@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete variance-preserving schedule over t = 0..T.

    betas: (T+1,) float64, as defined. betas[0] enters every alphas_cumprod[t >= 1] through the
        cumulative product (1 - b_0)(1 - b_1)...(1 - b_t), as in the course; only alphas_cumprod[0] is
        then set to 1, so ab_1 / ab_0 = (1 - b_0)(1 - b_1), not 1 - b_1.
    alphas_cumprod: (T+1,) float64, decreasing from alphas_cumprod[0] = 1.
    terminal_snr: None for the linear schedule as it is; else ab_T / (1 - ab_T) after rescale_terminal_snr.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    beta_start: float
    beta_end: float
    terminal_snr: float | None = None

    @classmethod
    def course(cls, T: int = 500, beta_start: float = 1e-4, beta_end: float = 0.02,
               terminal_snr: float | None = None) -> "Schedule":
        """The course's linear schedule: b = linspace(beta_start, beta_end, T+1), ab_0 := 1; with terminal_snr,
        rescaled so that the SNR at t = T is terminal_snr (rescale_terminal_snr)."""
        if T < 1:
            raise ValueError(f"schedule needs T >= 1, got {T}")
        betas = torch.linspace(beta_start, beta_end, T + 1, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod[0] = 1.0
        if terminal_snr is not None:
            alphas_cumprod = rescale_terminal_snr(alphas_cumprod, terminal_snr)
            betas = torch.cat([betas[:2], 1.0 - alphas_cumprod[2:] / alphas_cumprod[1:-1]])
        return cls(betas, alphas_cumprod, beta_start, beta_end, terminal_snr)

    @classmethod
    def from_config(cls, config: dict) -> "Schedule":
        if config.get("kind", "linear") != "linear":
            raise ValueError(f"unknown schedule kind {config.get('kind')!r}")
        terminal = config.get("terminal_snr")
        return cls.course(int(config["T"]), float(config["beta_start"]), float(config["beta_end"]),
                          None if terminal is None else float(terminal))

    def to_config(self) -> dict:
        config = {"kind": "linear", "T": self.T, "beta_start": self.beta_start, "beta_end": self.beta_end}
        if self.terminal_snr is not None:
            config["terminal_snr"] = self.terminal_snr
        return config

    @property
    def T(self) -> int:
        return len(self.betas) - 1

    def alpha_bar(self, t: int) -> float:
        return float(self.alphas_cumprod[t])

    def sigma(self, t: int) -> float:
        """k-diffusion noise level sqrt((1 - ab_t) / ab_t); 0 at t = 0."""
        ab = self.alpha_bar(t)
        return math.sqrt((1.0 - ab) / ab)

    def log_snr(self, t: int) -> float:
        """lambda_t = log(alpha_t / std_t) with alpha_t = sqrt(ab_t), std_t = sqrt(1 - ab_t) (the VP noise std; sigma is
        the VE view's, Schedule.sigma)."""
        ab = self.alpha_bar(t)
        return 0.5 * math.log(ab / (1.0 - ab)) if ab < 1.0 else math.inf

    def sigmas(self) -> torch.Tensor:
        """(T+1,) float64 k-diffusion sigmas, increasing from 0."""
        return ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    def timesteps(self, steps: int, spacing: str = "trailing") -> list[int]:
        """The grid of a sampler with `steps` model calls: steps+1 strictly decreasing ints, t_0 <= T,
        last 0.

        trailing: round(T - k T / steps), starts at T (the course's range(T, 0, -T // steps)).
        leading: (steps - k) * (T // steps), then 0 (DDIM paper; skips the noisiest times).
        linspace: round(linspace(T, 1, steps)), then 0: ends at t = 1 with a final denoise.
        quadratic: round(T (k / steps)^2) for k = steps..1, then 0 (DDIM paper's CIFAR grid).
        logsnr: uniform in log-SNR from t = T to t = 1, then 0 (DPM-Solver's grid for pixel models).
        karras: Karras et al.'s sigmas (rho = 7) from sigma(T) to sigma(1), each mapped to the nearest t,
        then 0 (k-diffusion's grid for Euler and Heun).
        """
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be between 1 and T={self.T}, got {steps}")
        T = self.T
        k = np.arange(steps + 1, dtype=np.float64)
        if spacing == "trailing":
            grid = T - k * T / steps
        elif spacing == "leading":
            grid = (steps - k) * (T // steps)
        elif spacing == "linspace":
            grid = np.append(np.linspace(T, 1, steps), 0.0)
        elif spacing == "quadratic":
            grid = T * ((steps - k) / steps) ** 2
        elif spacing == "logsnr":
            grid = np.append(self._logsnr_grid(steps), 0.0)
        elif spacing == "karras":
            grid = np.append(self._karras_grid(steps), 0.0)
        else:
            raise ValueError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
        return _strictly_decreasing(np.floor(grid + 0.5).astype(np.int64), T)

    def _logsnr_grid(self, steps: int) -> np.ndarray:
        lambdas = np.array([self.log_snr(t) for t in range(1, self.T + 1)])  # decreasing in t
        targets = np.linspace(lambdas[-1], lambdas[0], steps)  # from t = T to t = 1
        return np.interp(targets, lambdas[::-1], np.arange(self.T, 0, -1, dtype=np.float64))

    def karras_sigmas(self, n: int, rho: float = 7.0) -> np.ndarray:
        """(n,) float64 Karras sigmas from sigma(T) down to sigma(1) (n = 1: just sigma(T)):
        sigma_k = (smax^(1/rho) + k/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
        lo, hi = self.sigma(1) ** (1.0 / rho), self.sigma(self.T) ** (1.0 / rho)
        return (hi + np.linspace(0.0, 1.0, n) * (lo - hi)) ** rho

    def _karras_grid(self, steps: int) -> np.ndarray:
        """Continuous t of the Karras sigmas: linear interpolation of log sigma over t in 1..T."""
        log_sigmas = self.sigmas()[1:].log().numpy()
        return np.interp(np.log(self.karras_sigmas(steps)), log_sigmas, np.arange(1, self.T + 1, dtype=np.float64))


def rescale_terminal_snr(alphas_cumprod: torch.Tensor, terminal_snr: float) -> torch.Tensor:
    """(T+1,) alphas_cumprod whose SNR ab / (1 - ab) at t = T is terminal_snr, after Lin et al. (WACV 2024, their
    Algorithm 1, which takes it to 0): sqrt(ab_t) for t >= 1 is mapped by the affine map that keeps sqrt(ab_1) and
    sends sqrt(ab_T) to sqrt(terminal_snr / (1 + terminal_snr)); ab_0 stays 1.

    The course's schedule leaves sqrt(ab_500) = 0.079 of the image in x_500, which samplers starting from pure noise
    never see; a tiny terminal_snr (not 0, so that sigma and log-SNR stay finite) trains the net on what they start
    from. Needs 0 < terminal_snr < the schedule's own SNR at T."""
    root = alphas_cumprod.sqrt()
    first, last = root[1], root[-1]
    target = math.sqrt(terminal_snr / (1.0 + terminal_snr)) if terminal_snr > 0 else 0.0
    if len(root) < 3 or not 0.0 < target < last:
        raise ValueError(f"terminal_snr must be above 0 and below the schedule's own "
                         f"{float(last ** 2 / (1 - last ** 2)):.3g} (T >= 2), got {terminal_snr}")
    rescaled = root.clone()
    rescaled[1:] = target + (root[1:] - last) * (first - target) / (first - last)
    return rescaled ** 2


def _strictly_decreasing(grid: np.ndarray, T: int) -> list[int]:
    """Push rounded grid points apart so that no two land on the same t, keeping 0 <= t <= T."""
    ts = [int(v) for v in grid]
    ts[-1] = 0
    for i in range(len(ts) - 2, -1, -1):
        ts[i] = max(ts[i], ts[i + 1] + 1)
    for i in range(len(ts) - 1):
        ts[i] = min(ts[i], T - i)
    return ts
