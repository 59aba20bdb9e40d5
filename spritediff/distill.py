"""Progressive distillation (Salimans and Ho, ICLR 2022): a student that takes one step where its teacher takes
two (or `jump`), round after round, until it samples in `calls` model calls (docs/design.md, "Distillation").

Round r (0-based) of a run from S0 = start_steps, J = jump: the teacher samples with deterministic DDIM on the
trailing grid of S0 / J^r steps, the student on every J-th point of it, S0 / J^(r+1) steps. J = 2 is the paper's
halving; J = S0 / calls is one round that distils the teacher's DDIM-S0 straight into the final student. Round 0's
teacher is the given model with classifier-free guidance w (Meng et al., CVPR 2023: the guided teacher is the
target); each later round's teacher is the previous round's student (its EMA weights), whose guidance is in its
weights. Each round starts its student from its teacher's weights, with a fresh optimizer and EMA. A student
wider than the teacher (student_width) starts round 0 as the teacher widened (spritediff.models.widen: the same
function, more channels), and every later round's teacher is as wide as its student.

A training step draws x0 (with its class, dropped to no context with p = context_drop) from the training data,
a student step i (times t = s_i > t'' = s_(i+1), the teacher's J - 1 grid points between them) and the noise of
x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps; the teacher's J DDIM steps from t give x_t'', and the student's one
step lands there exactly when its x0 prediction is the target (distillation_target)

    x0_target = (x_t'' - (sigma_t''/sigma_t) x_t) / (alpha_t'' - (sigma_t''/sigma_t) alpha_t),

alpha = sqrt(ab), sigma = sqrt(1 - ab). The loss is max(SNR_t, 1) |x0_student - x0_target|^2 (truncated SNR),
plus, with adversarial > 0, a critic's judgement of x0_student against the targets (spritediff.adversarial).
The student outputs v (or x0): eps-prediction cannot give x0 at the noisiest step, where alpha_T ~ 0.08 would
multiply its error by 12.

States. By default (states "data") x_t is the training data noised, the distribution the teacher learned. A
few-step student samples elsewhere: from its second call on, its input is its own last output, which lies on the
teacher's deterministic path from pure noise, not on the data's noising (DDIM's paths drift from it:
docs/default_model.md). With states "teacher" (one round only) the run first draws `paths` paths of the guided
teacher's DDIM from pure noise, each with a context drawn as a training row's (dropped with p = context_drop),
and keeps every path's states at the student's grid; a training step draws (path, i) and learns the step from
state i to state i + 1, whose target is the same closed form (landing_x0) with no teacher call. Path j's noise
and context come from generators keyed by (seed, j, 1), so a resumed run draws the same paths again. With states
"student" (one round, from an --init student) x_t is the state the round's EMA student reaches in i of its own
calls from pure noise, and the target is the teacher's J steps from there: the student learns where its own
earlier calls put it (on-policy, as DAgger, Ross et al. 2011), which neither the data nor the teacher's paths show.

A sample critic (adversarial_sample > 0) aims past the teacher: each step the student also draws a few-call sample
from fresh noise, its net in eval mode as it samples, with the classes of the rows a data step draws (whatever the
states); a SampleCritic learns to tell those samples from the rows' real sprites, and the student follows its
gradient back through all its calls. The squared error ties the student to the teacher's sampler; this term, to
the data.

Distribution matching (dmd > 0, spritediff.distribution_matching) aims at the teacher's distribution instead of
its sampler: on the same few-call samples a fake score (a copy of the teacher) learns the student's samples, and
the student follows the difference between that score's denoising and the guided teacher's. With dmd_gan > 0 the
fake score also carries a critic on its features (DMD2's GAN term), trained on the rows' real sprites against those
samples, both noised; the student follows it too. With squared_error 0 the student follows those terms alone, as
DMD2's does; their weights are still set against the squared error's gradient, which is computed and logged as before.

Every random draw of step k (the rows, i, the noise, the dropout) comes from generators keyed by (seed, k), so a
run resumed from its checkpoint takes exactly the steps of an uninterrupted one.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from .adversarial import Critic, FeatureCritic, SampleCritic, balanced_weight, critic_hinge_loss
from .checkpoint import SpriteModel, save_model, unreadable_reason
from .data import SpriteData
from .denoiser import eps_from_output
from .distribution_matching import FakeScore, matching_direction, matching_loss, noise_levels
from .distill_config import STUDENT_PREDICTIONS, DistillConfig  # noqa: F401 (the run's settings, re-exported)
from .engine import Engine
from .errors import SpriteDiffError
from .models import ContextUnet
from .models.widen import widen
from .outputs import write_atomically
from .pixels import to_model_space
from .provenance import command_line
from .rng import keyed_generator
from .samplers.common import predict_x0
from .schedule import Schedule
from .sprites import credit_record
from .student import StudentSchedule
from .train import batch_indices, ema_update, log_path, machine_name, noisy, state_path

STATE_KEYS = ("config", "step", "student", "ema", "optimizer", "teacher")
CRITIC_BETAS = (0.5, 0.999)  # Adam's for the critic: a short first-moment memory, as GAN critics are trained
CRITIC_LR_FACTOR = 4  # the critic's learning rate over the student's (two time scales, Heusel et al. 2017)
PATH_BATCH = 256  # teacher paths drawn per batch at the start of a run with states "teacher"


def teacher_fingerprint(model: SpriteModel) -> str:
    """sha256 of a model's weights (as float32, by sorted key), schedule and prediction type."""
    digest = hashlib.sha256(json.dumps([model.schedule.to_config(), model.prediction_type]).encode())
    for key, value in sorted(model.net.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def round_grids(schedule: Schedule, start_steps: int, calls: int, jump: int = 2) -> list[list[int]]:
    """The grids of the rounds' teachers and the last student: the trailing grid of start_steps, then every
    jump-th point of the one before, down to `calls` steps. len = rounds + 1; round r's student is grids[r + 1]."""
    grids = [schedule.timesteps(start_steps, "trailing")]
    while len(grids[-1]) - 1 > calls:
        grids.append(grids[-1][::jump])
    return grids


def ddim_jump(x: torch.Tensor, eps: torch.Tensor, ab_t: torch.Tensor, ab_s: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM from t to s: sqrt(ab_s) x0_hat + sqrt(1 - ab_s) eps, x0_hat = (x - sqrt(1 - ab_t) eps) /
    sqrt(ab_t). x, eps (B,C,H,W); ab_t, ab_s broadcastable to them, e.g. (B,1,1,1)."""
    return ab_s.sqrt() * predict_x0(x, eps, ab_t) + (1 - ab_s).sqrt() * eps


def distillation_target(eps_fn, x_t: torch.Tensor, path: list[torch.Tensor],
                        alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_target, x_next): the teacher's DDIM steps from x_t along path = [t, ..., t_next], and the x0 with which
    one DDIM step t -> t_next lands on the same x_next.

    eps_fn(x (B,C,H,W), t (B,) long) -> eps; x_t (B,C,H,W); path: at least two strictly decreasing times, each (B,)
    long; alphas_cumprod (T+1,) on x_t's device and dtype. One step t -> t_next with x0 = x0_hat lands on
    sqrt(ab'') x0_hat + sqrt(1 - ab'') (x_t - sqrt(ab) x0_hat) / sqrt(1 - ab); solving for x0_hat gives the target.
    """
    def ab(times):
        return alphas_cumprod[times].view(-1, *[1] * (x_t.dim() - 1))

    x = x_t
    for here, there in zip(path, path[1:]):
        x = ddim_jump(x, eps_fn(x, here), ab(here), ab(there))
    return landing_x0(x_t, x, ab(path[0]), ab(path[-1])), x


def landing_x0(x_t: torch.Tensor, x_next: torch.Tensor, ab_t: torch.Tensor, ab_next: torch.Tensor) -> torch.Tensor:
    """The x0 with which one DDIM step from x_t at ab_t lands on x_next at ab_next (B,C,H,W); ab_t, ab_next
    broadcastable to them."""
    ratio = ((1 - ab_next) / (1 - ab_t)).sqrt()
    return (x_next - ratio * x_t) / (ab_next.sqrt() - ratio * ab_t.sqrt())


def path_states(eps_fn, x_T: torch.Tensor, grid: list[int], keep_every: int,
                alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM path from x_T (B,C,H,W) along grid (decreasing times, grid[0] = T), kept at grid[0],
    grid[keep_every], ...: (B, len(grid[::keep_every]), C, H, W). eps_fn(x, t (B,) long) -> eps."""
    times = [torch.full((len(x_T),), t, dtype=torch.long, device=x_T.device) for t in grid]
    kept, x = [x_T], x_T
    for k, (here, there) in enumerate(zip(times, times[1:]), start=1):
        x = ddim_jump(x, eps_fn(x, here), alphas_cumprod[here].view(-1, 1, 1, 1),
                      alphas_cumprod[there].view(-1, 1, 1, 1))
        if k % keep_every == 0:
            kept.append(x)
    return torch.stack(kept, 1)


def x0_from_output(out: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor, prediction: str) -> torch.Tensor:
    """The x0 a student's output implies at x_t: v -> sqrt(ab) x_t - sqrt(1 - ab) v; x0 -> the output itself."""
    if prediction == "v":
        return ab.sqrt() * x_t - (1 - ab).sqrt() * out
    return out


def truncated_snr_weight(ab: torch.Tensor) -> torch.Tensor:
    """max(SNR, 1) with SNR = ab / (1 - ab): Salimans and Ho's weighting of the x0 error."""
    return (ab / (1 - ab)).clamp(min=1.0)


class Distiller:
    """The rounds' teacher and student, the student's EMA and optimizer, and the global step; saves and restores
    all of them."""

    def __init__(self, config: DistillConfig, teacher: SpriteModel, data: SpriteData, device: torch.device,
                 progress: bool = False, init: SpriteModel | None = None):
        config.check(teacher.schedule.T)
        self.config, self.teacher_model, self.data, self.device = config, teacher, data, device
        self.schedule = teacher.schedule
        self.grids = round_grids(self.schedule, config.start_steps, config.calls, config.jump)
        self.alphas_cumprod = self.schedule.alphas_cumprod.float().to(device)
        self.images = data.images.to(device)
        self.labels = None if data.labels is None else data.labels.to(device)
        self.step = 0
        self.student_width = teacher.net.n_feat * config.width_factor(teacher.net.n_feat)
        self._set_teacher(copy.deepcopy(teacher.net).to(device))
        if init is not None:
            check_init(init, config, self.grids[1], self.student_width)
        self._start_round(self.teacher_net if init is None else init.net)
        self.paths, self.path_contexts = self._draw_paths(progress) if config.states == "teacher" else (None, None)
        self.critic, self.critic_optimizer = self._new_critic(Critic, 3) if config.adversarial else (None, None)
        classes = 0 if self.labels is None else self.labels.shape[1]
        self.sample_critic, self.sample_critic_optimizer = (
            self._new_critic(SampleCritic, 5, classes) if config.adversarial_sample else (None, None))
        gan_critic = self._seeded(FeatureCritic, 8, teacher.net.n_feat) if config.dmd_gan else None
        self.fake_score = FakeScore(teacher, device, config.lr, config.precision, gan_critic) if config.dmd else None
        self.critic_loss: float | None = None  # the last step's, for the log
        self.sample_critic_loss: float | None = None
        self.fake_score_loss: float | None = None
        self.dmd_weight: float | None = None  # the distribution-matching term's last weight (held once frozen)

    @property
    def round(self) -> int:
        """The round the next step belongs to (the last one once the run is finished)."""
        return min(self.step // self.config.steps_per_round, self.config.rounds - 1)

    @property
    def total_steps(self) -> int:
        return self.config.rounds * self.config.steps_per_round

    def _set_teacher(self, net: nn.Module) -> None:
        """The round's teacher: net as saved in checkpoints, and the engine that runs a copy of it as `sample` runs
        a model, BatchNorm folded and channels-last on the CPU (spritediff.fast: about 20 % faster a call). Round
        0's teacher predicts what the given model does; a later round's, the previous student, what students do."""
        self.teacher_net = net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        prediction = self.teacher_model.prediction_type if self.round == 0 else self.config.prediction
        model = SpriteModel(net, self.schedule, self.teacher_model.classes, prediction_type=prediction)
        self.teacher_engine = Engine(model, self.device, fast=True, precision=self.config.precision)

    def _start_round(self, source: nn.Module) -> None:
        """A student with source's weights (the round's teacher, or round 0's --init student; round 0 of a wider
        student: source widened, the same function), its warmed-up EMA and a fresh Adam."""
        self.student = widen(source, self.student_width // source.n_feat, keyed_generator(self.config.seed, 0, 2))
        self.student = self.student.to(self.device).train()
        for p in self.student.parameters():
            p.requires_grad_(True)
        if self.config.precision == "bf16":
            self.student = self.student.to(memory_format=torch.channels_last)
        self.ema = AveragedModel(self.student, multi_avg_fn=ema_update(self.config.ema, True), use_buffers=True)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=self.config.lr)

    def _seeded(self, kind: type, stream: int, *args) -> torch.nn.Module:
        """kind(*args) on device, its weights from generator (seed, 0, stream), so that a resumed run builds it as the
        first did."""
        with torch.random.fork_rng(devices=[]):
            seed = keyed_generator(self.config.seed, 0, stream)
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=seed)))
            return kind(*args).to(self.device)

    def _new_critic(self, kind: type, stream: int, *args) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """A critic of `kind` (channels, *args) (_seeded), kept across rounds, and its Adam (a constant lr,
        CRITIC_LR_FACTOR times the student's, to keep ahead of the student it judges)."""
        critic = self._seeded(kind, stream, self.images.shape[-1], *args)
        return critic, torch.optim.Adam(critic.parameters(), lr=CRITIC_LR_FACTOR * self.config.lr,
                                        betas=CRITIC_BETAS)

    def _adversarial_term(self, x0_student: torch.Tensor, target: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                          distill_loss: torch.Tensor) -> torch.Tensor:
        """The x0 critic's step (targets real, the student's x0 fake) and the student's term (_judged); x0s and x_t
        (B,C,H,W), t (B,) integer times."""
        times = t.float() / self.schedule.T
        term, self.critic_loss = self._judged(self.critic, self.critic_optimizer, (target, x_t, times),
                                              (x0_student, x_t, times), self.config.adversarial, distill_loss)
        return term

    def _few_call_batch(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(real, context, sample) for the terms on whole samples: the sprites of the step's data rows (the rows a
        data step draws, batch_indices, whatever the states), their (B, K) class rows, and the student's few-call
        samples from noise (seed, step, 4) with those classes, differentiable through all its calls once a term
        has joined."""
        rows = batch_indices(self.step, self.config.batch, len(self.data), self.config.seed).to(self.device)
        real = to_model_space(self.images[rows])
        context = self._row_context(rows, torch.ones(len(rows)))
        noise = torch.randn(real.shape, generator=keyed_generator(self.config.seed, self.step, 4)).to(self.device)
        with torch.set_grad_enabled(not self._warming_up):
            return real, context, self._student_sample(noise, context)

    def _sample_term(self, real: torch.Tensor, context, sample: torch.Tensor,
                     distill_loss: torch.Tensor) -> torch.Tensor:
        """The sample critic's step (real sprites against the student's samples, _few_call_batch) and the student's
        term, through all its calls (_judged)."""
        term, self.sample_critic_loss = self._judged(self.sample_critic, self.sample_critic_optimizer,
                                                     (real, context), (sample, context),
                                                     self.config.adversarial_sample, distill_loss)
        return term

    def _dmd_term(self, real: torch.Tensor, context, sample: torch.Tensor, distill_loss: torch.Tensor) -> torch.Tensor:
        """The fake score's dmd_fake_steps steps on the student's samples (_few_call_batch; with dmd_gan, its critic's
        too, against the real sprites), then the distribution-matching term (spritediff.distribution_matching) at
        those samples noised to times and noise from (seed, step, 7), weighted so that its gradient at the student's
        last layer is config.dmd times the distillation loss's (every step, or at the first joined step only:
        config.dmd_weight); 0 while warming up."""
        g = keyed_generator(self.config.seed, self.step, 6)
        for _ in range(self.config.dmd_fake_steps):
            self.fake_score_loss = self.fake_score.learn(sample, context, g, real)
        if self._warming_up:
            return torch.zeros((), device=distill_loss.device)
        g = keyed_generator(self.config.seed, self.step, 7)
        t = noise_levels(len(sample), self.schedule.T, g, self.config.dmd_t_max).to(self.device)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = noisy(sample.detach(), torch.randn(sample.shape, generator=g).to(self.device), ab)
        with torch.no_grad():
            x0_real = predict_x0(x_t, self._real_score_eps(context)(x_t, t), ab)
            x0_fake = predict_x0(x_t, self.fake_score.eps(context)(x_t, t), ab)
        term = matching_loss(sample, matching_direction(sample.detach(), x0_real, x0_fake))
        if self.config.dmd_weight == "balanced" or self.dmd_weight is None:
            self.dmd_weight = float(balanced_weight(distill_loss, term, self.student.out[-1].weight, self.config.dmd))
        return self.dmd_weight * term

    def _gan_term(self, context, sample: torch.Tensor, distill_loss: torch.Tensor) -> torch.Tensor:
        """DMD2's GAN term: the student's samples (B,C,H,W), noised at times and noise from (seed, step, 8), scored
        by the fake score's critic; softplus(-score) (non-saturating), weighted so that its gradient at the student's
        last layer is config.dmd_gan times the distillation loss's."""
        g = keyed_generator(self.config.seed, self.step, 8)
        t = noise_levels(len(sample), self.schedule.T, g, self.config.dmd_t_max).to(self.device)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = noisy(sample, torch.randn(sample.shape, generator=g).to(self.device), ab)
        fooling = torch.nn.functional.softplus(-self.fake_score.judge(x_t, t, context)).mean()
        return balanced_weight(distill_loss, fooling, self.student.out[-1].weight, self.config.dmd_gan) * fooling

    @property
    def _warming_up(self) -> bool:
        """Whether the step is in the first adversarial_start of its round, where the critics and the fake score
        learn alone."""
        return self.step % self.config.steps_per_round < self.config.adversarial_start * self.config.steps_per_round

    def _judged(self, critic: nn.Module, optimizer, real: tuple, fake: tuple, ratio: float,
                distill_loss: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(term, critic loss): one hinge step of critic, scoring critic(*real) high and critic(*fake) low (fake[0]
        detached), then the student's term: the critic's score of fake[0], negated, weighted so that its gradient at
        the student's last layer is `ratio` times the distillation loss's; 0 in the first adversarial_start of
        each round, while the critic learns alone."""
        critic.requires_grad_(True)
        critic_loss = critic_hinge_loss(critic(*real), critic(fake[0].detach(), *fake[1:]))
        optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        optimizer.step()
        critic.requires_grad_(False)  # the student's backward pass leaves the critic alone
        if self._warming_up:
            return torch.zeros((), device=distill_loss.device), float(critic_loss.detach())
        fooling = -critic(*fake).mean()
        weight = balanced_weight(distill_loss, fooling, self.student.out[-1].weight, ratio)
        return weight * fooling, float(critic_loss.detach())

    def _student_output(self, x_t: torch.Tensor, t: torch.Tensor, context) -> torch.Tensor:
        """The online student's float32 output (v or x0) at x_t (B,C,H,W), t (B,) integer times, with its
        gradient."""
        low = self.config.precision == "bf16"
        student_in = x_t.contiguous(memory_format=torch.channels_last) if low else x_t
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=low):
            return self.student(student_in, t.float() / self.schedule.T, context).float()

    def _student_sample(self, noise: torch.Tensor, context) -> torch.Tensor:
        """The online student's sample from x_T = noise (B,C,H,W): its DDIM on the round's grid, its net in eval mode
        (as it samples), differentiable through every call."""
        def eps(x, t):
            ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
            return eps_from_output(self._student_output(x, t, context), x, ab, self.config.prediction)

        grid = self.grids[self.round + 1]
        self.student.eval()
        try:
            return path_states(eps, noise, grid, len(grid) - 1, self.alphas_cumprod)[:, -1]
        finally:
            self.student.train()

    def _teacher_eps(self, context: torch.Tensor | None):
        """Round 0: the given model, guided; later rounds: the previous student, whose guidance is in its weights."""
        return self.teacher_engine.eps(context, self.config.guidance if self.round == 0 else 0.0)

    def _real_score_eps(self, context: torch.Tensor | None):
        """The matching's real score (one round only: the given model): the teacher guided at dmd_guidance, or at
        the distillation's own guidance where that is unset."""
        w = self.config.guidance if self.config.dmd_guidance is None else self.config.dmd_guidance
        return self.teacher_engine.eps(context, w)

    def lr_at(self, step: int) -> float:
        return self.config.lr * (1 - (step % self.config.steps_per_round) / self.config.steps_per_round)

    def step_draws(self, step: int):
        """Step `step`'s draws: data rows (B,), student step index (B,), noise (B,C,H,W), keep-context mask (B,)."""
        config = self.config
        g = keyed_generator(config.seed, step, 0)
        _, height, width, channels = self.images.shape
        index = torch.randint(0, len(self.grids[self.round + 1]) - 1, (config.batch,), generator=g)
        noise = torch.randn((config.batch, channels, height, width), generator=g)
        keep = (torch.rand(config.batch, generator=g) >= config.context_drop).float()
        if config.states == "teacher":
            return torch.randint(0, config.paths, (config.batch,), generator=g), index, noise, keep
        rows = batch_indices(step, config.batch, len(self.data), config.seed)
        return rows, index, noise, keep

    def _draw_paths(self, progress: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The guided teacher's DDIM paths on round 0's teacher grid, kept at the student's grid: (paths,
        calls + 1, C, H, W) on the device, and each path's (paths, K) context row (None without classes).
        Path j's x_T, data row and dropout come from generator (seed, j, 1)."""
        config, n = self.config, self.config.paths
        _, height, width, channels = self.images.shape
        noise, rows, keep = torch.empty((n, channels, height, width)), torch.empty(n, dtype=torch.long), torch.empty(n)
        for j in range(n):
            g = keyed_generator(config.seed, j, 1)
            noise[j] = torch.randn((channels, height, width), generator=g)
            rows[j] = torch.randint(0, len(self.data), (1,), generator=g)
            keep[j] = float(torch.rand(1, generator=g).item() >= config.context_drop)
        contexts = None if self.labels is None else self.labels[rows.to(self.device)] * keep.to(self.device)[:, None]
        chunks = []
        for lo in tqdm(range(0, n, PATH_BATCH), desc="teacher paths", unit="batch", disable=not progress or None,
                       dynamic_ncols=True):
            context = None if contexts is None else contexts[lo:lo + PATH_BATCH]
            with torch.no_grad():
                chunks.append(path_states(self._teacher_eps(context), noise[lo:lo + PATH_BATCH].to(self.device),
                                          self.grids[0], config.jump, self.alphas_cumprod).float())
        return torch.cat(chunks), contexts

    def _teacher_path(self, index: torch.Tensor) -> list[torch.Tensor]:
        """The round's teacher times from student step `index` (B,) to the next: jump + 1 tensors (B,) long."""
        teacher_grid = torch.tensor(self.grids[self.round], device=self.device)
        return [teacher_grid[self.config.jump * index.to(self.device) + k] for k in range(self.config.jump + 1)]

    def _row_context(self, rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
        """The (B, K) class rows of data rows `rows`, zero where keep (B,) is 0; None without classes."""
        if self.labels is None:
            return None
        return self.labels[rows.to(self.device)] * keep.to(self.device)[:, None]

    def _teacher_target(self, x_t: torch.Tensor, path: list[torch.Tensor], context) -> torch.Tensor:
        """The x0 with which one student step from x_t (B,C,H,W) lands where the teacher's steps along path do."""
        with torch.no_grad():
            return distillation_target(self._teacher_eps(context), x_t, path, self.alphas_cumprod)[0]

    def _data_batch(self, rows, index, noise, keep):
        """x_t (the data noised at the student's times), t, ab_t, context and the teacher's x0 target."""
        path, context = self._teacher_path(index), self._row_context(rows, keep)
        ab = self.alphas_cumprod[path[0]].view(-1, 1, 1, 1)
        x_t = noisy(to_model_space(self.images[rows.to(self.device)]), noise.to(self.device), ab)
        return x_t, path[0], ab, context, self._teacher_target(x_t, path, context)

    def _student_batch(self, rows, index, noise, keep):
        """x_t (the state the round's EMA student reaches in `index` of its own calls from x_T = noise, with row
        `rows`' context), t, ab_t, context and the teacher's x0 target from there (states "student")."""
        path, context = self._teacher_path(index), self._row_context(rows, keep)
        student = SpriteModel(self.ema.module, self.schedule, self.teacher_model.classes,
                              prediction_type=self.config.prediction)
        engine = Engine(student, self.device, fast=True, precision=self.config.precision)  # a folded copy, as `sample`
        with torch.no_grad():
            states = path_states(engine.eps(context), noise.to(self.device), self.grids[1][:int(index.max()) + 1], 1,
                                 self.alphas_cumprod)  # no guidance: the student's own is in its weights
        x_t = states[torch.arange(len(index), device=self.device), index.to(self.device)]
        ab = self.alphas_cumprod[path[0]].view(-1, 1, 1, 1)
        return x_t, path[0], ab, context, self._teacher_target(x_t, path, context)

    def _path_batch(self, rows, index):
        """x_t (state i of teacher paths `rows`), t, ab_t, context and the x0 that lands on state i + 1."""
        rows, index = rows.to(self.device), index.to(self.device)
        student_grid = torch.tensor(self.grids[1], device=self.device)
        t, ab = student_grid[index], self.alphas_cumprod[student_grid[index]].view(-1, 1, 1, 1)
        ab_next = self.alphas_cumprod[student_grid[index + 1]].view(-1, 1, 1, 1)
        x_t, x_next = self.paths[rows, index], self.paths[rows, index + 1]
        context = None if self.path_contexts is None else self.path_contexts[rows]
        return x_t, t, ab, context, landing_x0(x_t, x_next, ab, ab_next)

    def train_step(self) -> float:
        """One optimizer step; returns its distillation loss (the critics' terms left out, so that runs with and
        without them compare). The step that ends a round starts the next one."""
        config = self.config
        rows, index, noise, keep = self.step_draws(self.step)
        if config.states == "teacher":
            x_t, t, ab, context, target = self._path_batch(rows, index)
        elif config.states == "student":
            x_t, t, ab, context, target = self._student_batch(rows, index, noise, keep)
        else:
            x_t, t, ab, context, target = self._data_batch(rows, index, noise, keep)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        x0_student = x0_from_output(self._student_output(x_t, t, context), x_t, ab, config.prediction)
        error = (x0_student - target).pow(2).flatten(1).mean(1)
        loss = (truncated_snr_weight(ab.flatten()) * error).mean()
        total = config.squared_error * loss
        if self.critic is not None:
            total = total + self._adversarial_term(x0_student, target, x_t, t, loss)
        if self.sample_critic is not None or self.fake_score is not None:
            real, context, sample = self._few_call_batch()
            if self.sample_critic is not None:
                total = total + self._sample_term(real, context, sample, loss)
            if self.fake_score is not None:
                total = total + self._dmd_term(real, context, sample, loss)
                if self.fake_score.critic is not None and not self._warming_up:
                    total = total + self._gan_term(context, sample, loss)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.ema.update_parameters(self.student)
        self.step += 1
        if self.step % config.steps_per_round == 0 and self.step < self.total_steps:
            self._set_teacher(copy.deepcopy(self.ema.module))
            self._start_round(self.teacher_net)
        return float(loss.detach())

    def state(self) -> dict:
        critic = {} if self.critic is None else {"critic": self.critic.state_dict(),
                                                 "critic_optimizer": self.critic_optimizer.state_dict()}
        if self.sample_critic is not None:
            critic.update(sample_critic=self.sample_critic.state_dict(),
                          sample_critic_optimizer=self.sample_critic_optimizer.state_dict())
        if self.fake_score is not None:
            critic.update(fake_score=self.fake_score.net.state_dict(),
                          fake_score_optimizer=self.fake_score.optimizer.state_dict(), dmd_weight=self.dmd_weight)
            if self.fake_score.critic is not None:
                critic.update(fake_score_critic=self.fake_score.critic.state_dict())
        return {"config": asdict(self.config), "step": self.step, "student": self.student.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "teacher": self.teacher_net.state_dict(), **critic}

    def save_state(self, path: Path) -> None:
        write_atomically(path, lambda tmp: torch.save(self.state(), tmp))

    def load_state(self, path: Path) -> None:
        """Restore everything from a distillation checkpoint made with the same settings and teacher."""
        state = read_state(path, self.device)
        saved = {"jump": 2, "states": "data", "paths": DistillConfig.paths, "student_width": 0, "adversarial": 0.0,
                 "adversarial_sample": 0.0, "dmd": 0.0, "dmd_fake_steps": DistillConfig.dmd_fake_steps,
                 "dmd_weight": DistillConfig.dmd_weight, "dmd_t_max": DistillConfig.dmd_t_max, "dmd_gan": 0.0,
                 "dmd_guidance": None,
                 "squared_error": 1.0,
                 "adversarial_start": DistillConfig.adversarial_start, "init_sha256": "",
                 **state["config"]}  # older runs
        diff = {k: v for k, v in saved.items() if asdict(self.config).get(k) != v}
        if diff:
            raise SpriteDiffError(f"{path} was made with other settings or another teacher "
                                  f"({', '.join(sorted(diff))}); resume with the same ones")
        if state["step"] >= self.total_steps:
            raise SpriteDiffError(f"the distillation in {path} is finished ({state['step']} of {self.total_steps} "
                                  f"steps); nothing to resume")
        self.step = state["step"]
        try:
            if self.round > 0:  # the teacher is the previous round's student, of the student's width
                self.teacher_net = widen(self.teacher_net, self.student_width // self.teacher_net.n_feat)
            self.teacher_net.load_state_dict(state["teacher"])
            self._set_teacher(self.teacher_net)
            self._start_round(self.teacher_net)
            self.student.load_state_dict(state["student"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.critic is not None:
                self.critic.load_state_dict(state["critic"])
                self.critic_optimizer.load_state_dict(state["critic_optimizer"])
            if self.sample_critic is not None:
                self.sample_critic.load_state_dict(state["sample_critic"])
                self.sample_critic_optimizer.load_state_dict(state["sample_critic_optimizer"])
            if self.fake_score is not None:
                self.fake_score.net.load_state_dict(state["fake_score"])
                if self.fake_score.critic is not None:
                    self.fake_score.critic.load_state_dict(state["fake_score_critic"])
                self.fake_score.optimizer.load_state_dict(state["fake_score_optimizer"])
                self.dmd_weight = state.get("dmd_weight")  # older runs: none kept (balanced sets it every step)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise SpriteDiffError(f"cannot resume from {path}: its weights do not fit this teacher: {reason}") from None

    def student_model(self, info: dict, finished_round: int | None = None) -> SpriteModel:
        """The EMA student of the current round as a CPU SpriteModel that samples on that round's grid; or, right
        after round finished_round ended, that round's (its EMA is now the next round's teacher)."""
        r = self.round if finished_round is None else finished_round
        source = self.ema.module if finished_round is None or finished_round == self.round else self.teacher_net
        net = ContextUnet.from_config(self.teacher_model.net.config(), n_feat=self.student_width)
        net.load_state_dict({k: v.cpu().contiguous() for k, v in source.state_dict().items()})
        teacher = self.teacher_model
        schedule = StudentSchedule(tuple(self.grids[r + 1]), self.config.guidance, teacher_record(teacher, self.config),
                                   self.config.start_steps)
        return SpriteModel(net.eval(), self.schedule, teacher.classes, {**info, "rounds_done": self.step //
                           self.config.steps_per_round}, prediction_type=self.config.prediction,
                           class_mix=teacher.class_mix, student=schedule)


def teacher_record(teacher: SpriteModel, config: DistillConfig) -> dict:
    """What the student file says of its teacher."""
    record = {"model": teacher.path or "default", "sha256": config.teacher_sha256,
              "prediction_type": teacher.prediction_type}
    for key in ("command", "date"):
        if teacher.info.get(key):
            record[key] = teacher.info[key]
    return record


def read_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A distillation checkpoint, read without unpickling code and checked for its keys."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for empty, truncated or foreign files
        raise SpriteDiffError(f"cannot resume from {path}: not a readable checkpoint ({unreadable_reason(err)})") \
            from None
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing or not isinstance(state["config"], dict) or isinstance(state["step"], bool) or \
            not isinstance(state["step"], int) or state["step"] < 0:
        raise SpriteDiffError(f"cannot resume from {path}: not a spritediff distillation checkpoint "
                              f"(missing or bad: {', '.join(missing) or 'config or step'})")
    return state


def round_path(out: Path, calls: int) -> Path:
    """Where a finished round's student is kept: OUT-calls8.safetensors."""
    return out.with_name(f"{out.stem}-calls{calls}{out.suffix}")


def check_data_fits(teacher: SpriteModel, data: SpriteData) -> None:
    """The training data must be the teacher's kind of images, with one label column per teacher class."""
    _, height, width, channels = data.images.shape
    net = teacher.net
    if (height, width, channels) != (net.height, net.height, net.in_channels):
        raise SpriteDiffError(f"--data holds {height}x{width}x{channels} images; the teacher takes "
                              f"{net.height}x{net.height}x{net.in_channels}")
    classes = 0 if data.labels is None else data.labels.shape[1]
    if classes != net.n_cfeat:
        need = "no --labels" if net.n_cfeat == 0 else f"--labels with {net.n_cfeat} columns (its classes)"
        raise SpriteDiffError(f"the teacher has {net.n_cfeat} context classes and the data {classes}; give {need}")


def check_init(init: SpriteModel, config: DistillConfig, grid: list[int], width: int) -> None:
    """A SpriteDiffError unless init is a student of this run's teacher that round 0's student can start from: the
    same teacher (config.teacher_sha256), grid, guidance and prediction, and a width that divides the run's (a
    narrower student starts the run widened, computing the same function)."""
    name = init.path or "the --init model"
    if init.student is None:
        raise SpriteDiffError(f"--init {name} is not a distilled student; give a student of the same teacher "
                              f"(or leave --init out to start from the teacher)")
    mismatches = [(what, mine, wanted) for what, mine, wanted in (
        ("teacher", init.student.teacher.get("sha256"), config.teacher_sha256),
        ("grid", list(init.student.timesteps), list(grid)),
        ("guidance", init.student.guidance, config.guidance),
        ("prediction", init.prediction_type, config.prediction)) if mine != wanted]
    if width % init.net.n_feat:
        mismatches.append(("width", init.net.n_feat, f"one that divides {width}"))
    if mismatches:
        what, mine, wanted = mismatches[0]
        shown_values = ("another teacher's", "this one's") if what == "teacher" else (mine, wanted)
        raise SpriteDiffError(f"--init {name} cannot start this run: its {what} is {shown_values[0]}, round 1's "
                              f"student needs {shown_values[1]}")


def check_teacher(teacher: SpriteModel, name: str) -> None:
    if teacher.student is not None:
        raise SpriteDiffError(f"--teacher {name} is already {teacher.student.describe()}; distil its own teacher "
                              f"with a smaller --calls")


def run_distillation(config: DistillConfig, teacher: SpriteModel, data: SpriteData, out: Path, device: torch.device,
                     ckpt_every: int = 500, resume: bool = False, overwrite: bool = False, progress: bool = True,
                     data_name: str = "", dtype=torch.float16, init: SpriteModel | None = None) -> SpriteModel:
    """Distil teacher into a config.calls-step student written to out, checkpointing every ckpt_every steps and at
    each round's end; each finished round's student is also kept (round_path). An existing run at out is
    continued (resume) or replaced (overwrite); with neither, it is a user error (checked by the caller). init: a
    student of this teacher and round 0's grid that round 0 starts from instead of the teacher (check_init)."""
    check_teacher(teacher, teacher.path or "default")
    check_data_fits(teacher, data)
    distiller = Distiller(config, teacher, data, device, progress, init)
    if resume:
        distiller.load_state(state_path(out))
    if overwrite:
        state_path(out).unlink(missing_ok=True)
        log_path(out).unlink(missing_ok=True)
    try:
        return _distill_loop(distiller, out, ckpt_every, progress, data_name, dtype)
    except BaseException:
        if not resume and not state_path(out).exists():
            log_path(out).unlink(missing_ok=True)  # a new run that never checkpointed leaves no half a run
        raise


def _distill_loop(distiller: Distiller, out: Path, ckpt_every: int, progress: bool, data_name: str,
                  dtype) -> SpriteModel:
    config = distiller.config
    info = {"weights": f"EMA (decay {config.ema}, warmed up) of the last round's student",
            "command": command_line(), "data": data_name, "config": asdict(config),
            "machine": machine_name(distiller.device), "torch": torch.__version__,
            **credit_record(distiller.teacher_model.info)}
    start, first_step = time.perf_counter(), distiller.step
    bar = tqdm(total=distiller.total_steps, initial=distiller.step, disable=not progress or None, unit="step",
               dynamic_ncols=True)
    with open(log_path(out), "a") as log:
        while distiller.step < distiller.total_steps:
            round_before, calls = distiller.round, len(distiller.grids[distiller.round + 1]) - 1
            loss = distiller.train_step()
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint is kept ({state_path(out)})" if state_path(out).is_file()
                        else "no checkpoint was written")
                raise SpriteDiffError(f"loss became {loss} at step {distiller.step}; stopped, {kept}; try a lower "
                                      f"--lr")
            bar.update(1)
            bar.set_postfix(round=f"{round_before + 1}/{config.rounds}", calls=calls, loss=f"{loss:.4f}",
                            refresh=False)
            entry = {"step": distiller.step, "round": round_before + 1, "calls": calls, "loss": round(loss, 6),
                     "lr": distiller.lr_at(distiller.step - 1), "seconds": round(time.perf_counter() - start, 3)}
            if distiller.critic_loss is not None:
                entry["critic_loss"] = round(distiller.critic_loss, 6)
            if distiller.sample_critic_loss is not None:
                entry["sample_critic_loss"] = round(distiller.sample_critic_loss, 6)
            if distiller.fake_score_loss is not None:
                entry["fake_score_loss"] = round(distiller.fake_score_loss, 6)
            if distiller.dmd_weight is not None:
                entry["dmd_weight"] = round(distiller.dmd_weight, 6)
            if distiller.fake_score is not None and distiller.fake_score.critic_loss is not None:
                entry["gan_critic_loss"] = round(distiller.fake_score.critic_loss, 6)
            log.write(json.dumps(entry, allow_nan=False) + "\n")
            round_done = distiller.step % config.steps_per_round == 0
            if distiller.step % ckpt_every == 0 or round_done:
                log.flush()
                info.update(steps_done=distiller.step, wall_seconds=round(time.perf_counter() - start, 1),
                            steps_this_run=distiller.step - first_step,
                            date=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
                finished = round_before if round_done else None  # the EMA of a round that just ended
                model = distiller.student_model(info, finished)
                if round_done and distiller.step < distiller.total_steps:
                    save_model(model, round_path(out, calls), dtype)  # each finished round's student is kept
                distiller.save_state(state_path(out))
                save_model(model, out, dtype)
    bar.close()
    return distiller.student_model(info)
