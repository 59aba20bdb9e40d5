"""The settings of a distillation run (spritediff.distill), torch-free so that `spritediff distill --help` and its
argument errors load no torch."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .defaults import DEFAULT_GUIDANCE
from .errors import SpriteDiffError

STUDENT_PREDICTIONS = ("v", "x0")  # eps is refused: it cannot give x0 at the noisiest step (module docstring)
MAX_ROUND_STEPS = 10**8
PRECISIONS = ("fp32", "bf16")  # no "auto": a run's precision is part of its definition
STATES = ("data", "teacher", "student")  # where the student's x_t come from (spritediff.distill, "States")
MAX_PATHS = 10**6
MAX_WIDTH = 4096  # a bound on --student-width (n_feat): far past what a 16x16 net needs
MAX_FAKE_STEPS = 100  # a bound on --dmd-fake-steps: each is a training step of the teacher's net
DMD_WEIGHTS = ("balanced", "frozen")  # how --dmd's RATIO sets the term's weight (DistillConfig.dmd_weight)
MAX_ADVERSARIAL = 100.0  # a bound on --adversarial: past it the distillation loss no longer steers the student


@dataclass
class DistillConfig:
    """What defines a distillation run; resuming requires the same values."""

    calls: int = 4  # the final student's model calls per sample
    start_steps: int = 64  # the teacher's DDIM steps that round 0 divides by jump: calls * jump^rounds
    jump: int = 2  # teacher steps a student step replaces, every round: 2 halves (Salimans and Ho), start_steps /
    # calls distils the teacher's DDIM-start_steps in one round
    steps_per_round: int = 2000  # optimizer steps in each round
    batch: int = 64
    lr: float = 3e-4  # Adam; decays linearly to 0 within each round (docs/design.md 4.16: 1e-4, 3e-4 and 1e-3 tried)
    guidance: float = DEFAULT_GUIDANCE  # the teacher's classifier-free guidance the student learns to reproduce
    prediction: str = "v"  # what the student net outputs: v or x0
    context_drop: float = 0.1  # the share of rows distilled with no context (the teacher's unconditional path)
    ema: float = 0.999  # the EMA (warmed up) of each round's student, which the next round and the file take
    seed: int = 0
    precision: str = "fp32"  # or bf16: teacher and student forward passes under bf16 autocast
    states: str = "data"  # x_t: the data noised at the student's times, states on the teacher's own paths, or
    # the student's own states (from --init's student on)
    paths: int = 16384  # with states "teacher": how many teacher paths are drawn at the start
    student_width: int = 0  # the student's n_feat, a multiple of the teacher's (widened from it); 0: the teacher's
    adversarial: float = 0.0  # a critic's term, its gradient at the student's last layer this many times the
    # distillation loss's (spritediff.adversarial); 0: off
    adversarial_sample: float = 0.0  # a second critic's term: it judges the student's whole few-call sample against
    # real sprites of the same class, its gradient (through every call) this many times the distillation loss's; 0: off
    dmd: float = 0.0  # distribution matching (spritediff.distribution_matching): the student's whole samples moved
    # towards the teacher's distribution, the term's gradient (through every call) this many times the distillation
    # loss's; one round only (its real score is the given teacher); 0: off
    dmd_fake_steps: int = 2  # the fake score's training steps per student step: it must keep up with the student
    # whose samples it learns (DMD2's two time scales; 1 lagged on the sprites, docs/results.md)
    dmd_weight: str = "balanced"  # balanced: the weight is set every step so that the term's gradient is dmd times
    # the distillation loss's; frozen: set so at the first step the term joins, then held (the term then fades as the
    # student's distribution meets the teacher's, as DMD's fixed weight does)
    dmd_t_max: float = 0.98  # the largest share of T the matching's noise levels are drawn up to (from 0.02):
    # lower puts the term on fine detail, which a denoiser sees only at low noise
    dmd_guidance: float | None = None  # with dmd: the real score's classifier-free guidance; None: guidance (a
    # higher one aims the matching at the teacher's sharper, guided distribution while the squared error still holds
    # the student to the jumps at guidance)
    dmd_gan: float = 0.0  # with dmd: DMD2's GAN term, a critic on the fake score's features that tells real sprites
    # from the student's samples (both noised), its gradient at the student's last layer this many times the
    # distillation loss's; 0: off
    squared_error: float = 1.0  # the squared error's weight in the student's loss; 0 drops it (DMD2 trains with its
    # matching and GAN terms alone), the other terms still balanced against its gradient, which is computed as before
    adversarial_start: float = 0.4  # the share of each round the student learns from the squared error alone,
    # while the critics learn to tell its x0 from the targets (or its samples from sprites) and the fake score learns
    # its samples: an untrained critic only adds noise
    teacher_sha256: str = ""  # the teacher's weights and schedule (teacher_fingerprint): a resume needs the same
    init_sha256: str = ""  # the student round 0 starts from (--init), if not the teacher: its fingerprint

    @property
    def rounds(self) -> int:
        return round(math.log(self.start_steps / self.calls, self.jump)) if self.jump >= 2 else 0

    def width_factor(self, teacher_width: int) -> int:
        """How many times wider than its teacher (of n_feat teacher_width) the student is; a SpriteDiffError where
        student_width is not a multiple of it."""
        width = self.student_width or teacher_width
        if width % teacher_width:
            multiples = ", ".join(str(teacher_width * k) for k in (1, 2, 3, 4))
            raise SpriteDiffError(f"--student-width must be a multiple of the teacher's width {teacher_width} (the "
                                  f"student starts as the teacher widened): {multiples}, ...; got {self.student_width}")
        return width // teacher_width

    def check(self, T: int) -> None:
        """A SpriteDiffError naming the first setting out of range, for a teacher of T steps."""
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise SpriteDiffError(f"bad --{name.replace('_', '-')}: {value!r}")
        if not 1 <= self.calls <= T // 2:
            raise SpriteDiffError(f"--calls must be between 1 and {T // 2} (half the teacher's T={T}), "
                                  f"got {self.calls}")
        if not 2 <= self.jump <= T:
            raise SpriteDiffError(f"bad --jump: {self.jump!r} (at least 2: the teacher steps one student step "
                                  f"replaces)")
        if self.start_steps > T or self.rounds < 1 or self.start_steps != self.calls * self.jump ** self.rounds:
            powers = [self.calls * self.jump ** k for k in range(1, 12) if self.calls * self.jump ** k <= T]
            raise SpriteDiffError(f"--start-steps must be --calls times a power of --jump (at least 1), at most T={T}: "
                                  f"with --calls {self.calls} and --jump {self.jump}, one of "
                                  f"{', '.join(map(str, powers)) or 'none'}; got {self.start_steps}")
        one_round_only = f"--states {self.states}" if self.states != "data" else "--dmd" if self.dmd else ""
        if one_round_only and self.rounds != 1:  # their states or their real score are the given teacher's
            raise SpriteDiffError(f"{one_round_only} distils in one round: give --start-steps = --calls x --jump (e.g. "
                                  f"--calls 4 --start-steps 20 --jump 5), got {self.start_steps} = "
                                  f"{self.calls} x {self.jump}^{self.rounds}")
        if self.dmd_gan and not self.dmd:
            raise SpriteDiffError(f"--dmd-gan {self.dmd_gan:g} needs --dmd: its critic is the fake score's head, "
                                  f"which only --dmd trains")
        if self.dmd_guidance is not None and not self.dmd:
            raise SpriteDiffError(f"--dmd-guidance {self.dmd_guidance:g} needs --dmd: it guides the matching's real "
                                  f"score, which only --dmd uses")
        if self.squared_error == 0 and not (self.adversarial or self.adversarial_sample or self.dmd):
            raise SpriteDiffError("--squared-error 0 leaves nothing to train the student: add --dmd, --adversarial "
                                  "or --adversarial-sample")
        if self.states == "student" and not self.init_sha256:
            raise SpriteDiffError("--states student learns from the student's own states: give --init, a trained "
                                  "student of this teacher to start from (the teacher's weights read as a student's "
                                  "output draw no sprites)")
        for name, ok in (("steps_per_round", 1 <= self.steps_per_round <= MAX_ROUND_STEPS),
                         ("batch", 1 <= self.batch <= 100_000), ("lr", self.lr > 0), ("guidance", self.guidance >= 0),
                         ("prediction", self.prediction in STUDENT_PREDICTIONS),
                         ("context_drop", 0 <= self.context_drop <= 1), ("ema", 0 <= self.ema < 1),
                         ("seed", 0 <= self.seed < 2**63), ("precision", self.precision in PRECISIONS),
                         ("states", self.states in STATES), ("paths", 1 <= self.paths <= MAX_PATHS),
                         ("student_width", 0 <= self.student_width <= MAX_WIDTH),
                         ("adversarial", 0 <= self.adversarial <= MAX_ADVERSARIAL),
                         ("adversarial_sample", 0 <= self.adversarial_sample <= MAX_ADVERSARIAL),
                         ("dmd", 0 <= self.dmd <= MAX_ADVERSARIAL),
                         ("dmd_fake_steps", 1 <= self.dmd_fake_steps <= MAX_FAKE_STEPS),
                         ("dmd_weight", self.dmd_weight in DMD_WEIGHTS),
                         ("dmd_t_max", 0.05 <= self.dmd_t_max <= 1),
                         ("dmd_gan", 0 <= self.dmd_gan <= MAX_ADVERSARIAL),
                         ("dmd_guidance", self.dmd_guidance is None or self.dmd_guidance >= 0),
                         ("squared_error", 0 <= self.squared_error <= MAX_ADVERSARIAL),
                         ("adversarial_start", 0 <= self.adversarial_start < 1)):
            if not ok:
                raise SpriteDiffError(f"bad --{name.replace('_', '-')}: {getattr(self, name)!r}")
