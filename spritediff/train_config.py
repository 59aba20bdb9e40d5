"""What defines a training run (TrainConfig) and its bounds: no torch, so `spritediff train --help` and
`spritediff --help` can show the defaults without loading the training code (train.py)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .checks import NORMS, PREDICTION_TYPES
from .errors import SpriteDiffError

COURSE_STEPS = 28_608  # 32 epochs over the course's 89,400 images at batch 100
PRECISIONS = ("fp32", "bf16")  # training precisions (no "auto": a run is one or the other)
BN_STATS = ("ema", "live")  # the BatchNorm statistics a run saves with its EMA weights (train.copy_live_statistics)
MAX_STEPS = 10**9  # a bound on --steps that no real run reaches, so a typo like --epochs 1e300 is refused
MAX_BATCH = 100_000  # a bound on --batch (the whole batch is one tensor on the device)


def time_recipe(native_bf16: bool) -> dict:
    """--time's settings where they differ from the course's: Min-SNR-5, which led the plain MSE on DDIM-20 by every
    measure at 2,000 steps at the same cost a step, and bf16 where the machine runs it natively (a CPU with AVX-512
    BF16 or AMX), where a step costs half and 20 minutes of bf16 beat 30 of fp32 on both samplers
    (docs/default_model.md, "train --time")."""
    return {"min_snr_gamma": 5.0, **({"precision": "bf16"} if native_bf16 else {})}


@dataclass
class TrainConfig:
    """What defines a run; resuming requires the same values."""

    steps: int = COURSE_STEPS
    batch: int = 100
    lr: float = 1e-3
    n_feat: int = 64
    context_drop: float = 0.1
    ema: float = 0.999
    ema_warmup: bool = True  # decay min(ema, (1 + n) / (10 + n)) after n updates, so a short run forgets its start
    seed: int = 0
    T: int = 500
    precision: str = "fp32"  # fp32, or bf16: bf16 autocast of the forward pass, channels-last weights
    prediction: str = "eps"  # the net's target: eps (the noise), x0 (the clean image) or v (PREDICTION_TYPES)
    min_snr_gamma: float = 0.0  # Min-SNR-gamma loss weighting (Hang et al. 2023); 0: off, the course's plain MSE
    input_perturbation: float = 0.0  # DDPM-IP (Ning et al. 2023): x_t built from noise + gamma xi; 0: off
    lr_decay_steps: int = 0  # the linear decay reaches 0 at this step (> steps: stopped before annealed); 0: at `steps`
    terminal_snr: float = 0.0  # the schedule's SNR at t = T, rescaled (Schedule.course); 0: the course's own
    norm: str = "batch"  # the conv blocks' normalisation: the course's BatchNorm or GroupNorm (ContextUnet NORMS)
    bn_stats: str = "ema"  # the saved BatchNorm statistics: an EMA of the live net's ("ema") or the live net's ("live")
    init: str = ""  # fine-tuning: the model file the weights start from ("default": the shipped one); "": the seed's

    @staticmethod
    def options() -> tuple[str, ...]:
        """The settings a command line chooses (steps aside: --steps, --epochs or --time; T is the schedule's)."""
        return tuple(name for name in TrainConfig.__dataclass_fields__ if name not in ("steps", "T"))

    def check(self) -> None:
        """A SpriteDiffError naming the first field that is out of range (numbers must be finite)."""
        for name, value in asdict(self).items():
            if isinstance(value, bool) != isinstance(getattr(TrainConfig, name), bool) or not isinstance(
                    value, (int, float, str)) or (
                    isinstance(value, float) and not math.isfinite(value)):
                raise SpriteDiffError(f"bad --{name.replace('_', '-')}: {value!r}")
        for name, ok in (("steps", 1 <= self.steps <= MAX_STEPS), ("batch", 1 <= self.batch <= MAX_BATCH),
                         ("lr", self.lr > 0), ("n_feat", 8 <= self.n_feat <= 1024 and self.n_feat % 8 == 0),
                         ("context_drop", 0 <= self.context_drop <= 1), ("ema", 0 <= self.ema < 1),
                         ("precision", self.precision in PRECISIONS), ("seed", 0 <= self.seed < 2**63),
                         ("prediction", self.prediction in PREDICTION_TYPES),
                         ("min_snr_gamma", self.min_snr_gamma >= 0),
                         ("input_perturbation", 0 <= self.input_perturbation <= 1),
                         ("bn_stats", self.bn_stats in BN_STATS), ("norm", self.norm in NORMS),
                         ("terminal_snr", 0 <= self.terminal_snr < 1),  # its upper bound is the schedule's (Trainer)
                         ("lr_decay_steps", self.lr_decay_steps == 0 or self.lr_decay_steps >= self.steps),
                         ("T", isinstance(self.T, int) and 1 <= self.T <= 10_000)):
            if not ok:
                raise SpriteDiffError(f"bad --{name.replace('_', '-')}: {getattr(self, name)}")
