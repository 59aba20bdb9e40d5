"""Training: the course's recipe with the correct noise formula, an EMA, exact resume and DDP.

Every random draw of step k (the batch's rows, t, noise, context dropout) comes from generators
seeded by (seed, k), for the global batch; a process of a torchrun world takes its rows of it. So a
run resumed from a checkpoint, or spread over K processes, sees exactly the draws of one
uninterrupted single-process run.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .checkpoint import SpriteModel, load_model, save_model, unreadable_reason
from .checks import PREDICTION_TYPES
from .data import CHANNEL_NAMES, MODEL_HEIGHTS, SpriteData, image_kind, is_course_sprites
from .distributed import World, close_world, init_world, local_device, sync_batchnorm
from .errors import SpriteDiffError
from .models import ContextUnet
from .outputs import model_out_path, write_atomically
from .pixels import to_model_space
from .provenance import command_line
from .rng import keyed_generator
from .schedule import Schedule
from .sprites import CREDIT
from .train_config import COURSE_STEPS, MAX_BATCH, MAX_STEPS, PRECISIONS, TrainConfig  # noqa: F401 (re-exported)

STATE_KEYS = ("config", "step", "net", "ema", "optimizer")
PREDATED = {"ema_warmup": False}  # what a checkpoint made before a setting existed did, where that is not its default
PROBE_WARMUP = 3  # untimed first steps of --time's probe: the first few run up to 1.7x slower than the rest
PROBE_STEPS = 20  # steps timed by --time (after the warm-up) to choose a run's length
EMA_LENGTH = 0.1  # --time's EMA averages about the last tenth of the run (Karras et al. 2024: a fraction of it)


def copy_live_statistics(live: nn.Module, ema: nn.Module) -> None:
    """--bn-stats live: the EMA net's BatchNorm running statistics become the live net's, as the course's recipe
    keeps them (its EMA copies the live net's buffers at every step). Trained at a learning rate still high, the
    live net's activations spread a little wider than the EMA net's own, and normalising the EMA net with them
    changes what it predicts (docs/default_model.md measures what that does to each sampler)."""
    with torch.no_grad():
        for mine, theirs in zip(ema.buffers(), live.buffers()):
            mine.copy_(theirs)


def ema_update(decay: float, warmup: bool):
    """AveragedModel's update: e = d e + (1 - d) w with d = decay, or with warm-up d = min(decay, (1 + n) / (10 + n))
    for an update that follows n earlier ones (the first copies w), as TensorFlow's ExponentialMovingAverage with
    num_updates.

    Without warm-up, decay 0.999 still gives the first weights 0.999^k of the average after k steps (13 % at 2,000)."""
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    def update(ema_params, params, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, n_averaged)

    return update


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """(batch,) row indices of global step `step`: rows [step*batch, (step+1)*batch) of the endless
    stream of per-epoch permutations (epoch e shuffled by generator (seed, e))."""
    epoch, offset = divmod(step * batch, n)
    rows, taken = [], 0
    while taken < batch:
        rows.append(epoch_permutation(n, seed, epoch)[offset:offset + batch - taken])
        taken += len(rows[-1])
        epoch, offset = epoch + 1, 0
    return torch.cat(rows)


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """(n,) the order of epoch `epoch`, drawn once per epoch rather than once per step."""
    return torch.randperm(n, generator=keyed_generator(seed, epoch, 99))


def step_draws(config: TrainConfig, step: int, shape: tuple[int, ...]):
    """The global batch's random draws at this step: t (B,) in 1..T, noise (B,*shape), keep-context mask (B,), and
    the noise x_t is built from (B,*shape): the noise itself, or with --input-perturbation gamma, noise + gamma xi
    (xi drawn last, so the other draws are those of a run without it)."""
    g = keyed_generator(config.seed, step, 0)
    t = torch.randint(1, config.T + 1, (config.batch,), generator=g)
    noise = torch.randn((config.batch, *shape), generator=g)
    keep = (torch.rand(config.batch, generator=g) >= config.context_drop).float()
    if config.input_perturbation == 0:
        return t, noise, keep, noise
    return t, noise, keep, noise + config.input_perturbation * torch.randn(noise.shape, generator=g)


def diffusion_loss(net: nn.Module, x0: torch.Tensor, c: torch.Tensor | None, t: torch.Tensor,
                   noise: torch.Tensor, alphas_cumprod: torch.Tensor, T: int, precision: str = "fp32",
                   prediction: str = "eps", min_snr_gamma: float = 0.0,
                   input_noise: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the net's output and its target at x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise.

    x0, noise: (B,C,H,W); t: (B,) in 1..T. prediction: the target, "eps" (noise), "x0" (x0) or "v"
    (sqrt(ab_t) noise - sqrt(1 - ab_t) x0). With precision "bf16" the forward pass runs under bf16 autocast on
    channels-last input; the loss is fp32. min_snr_gamma > 0 weights each sample by min_snr_weight.
    input_noise: the noise x_t is built from instead, while the target keeps `noise` (input perturbation: the net
    learns to denoise inputs slightly off the forward process, as its own sampling paths are).
    """
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = noisy(x0, noise if input_noise is None else input_noise, ab)
    low = precision == "bf16"
    if low:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=low):
        out = net(x_t, t.to(x0.dtype) / T, c)
    target = training_target(x0, noise, ab, prediction)
    if min_snr_gamma == 0:
        return nn.functional.mse_loss(out.float(), target)
    per_sample = (out.float() - target).pow(2).flatten(1).mean(1)
    return (min_snr_weight(ab.flatten(), min_snr_gamma, prediction) * per_sample).mean()


def noisy(x0: torch.Tensor, noise: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """The forward process: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise, with ab (B,1,1,1) broadcast over x0 (B,C,H,W)."""
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def min_snr_weight(ab: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """(B,) loss weights of Min-SNR-gamma for alpha_bar ab (B,): the x0-space weight min(SNR, gamma), with
    SNR = ab / (1 - ab), expressed for the target: / SNR for eps, as is for x0, / (SNR + 1) for v (an error in
    eps costs 1/SNR of the same error in x0, one in v 1/(SNR + 1))."""
    snr = ab / (1 - ab)
    weight = snr.clamp(max=gamma)
    if prediction == "eps":
        return weight / snr
    if prediction == "v":
        return weight / (snr + 1)
    return weight


def training_target(x0: torch.Tensor, noise: torch.Tensor, ab: torch.Tensor, prediction: str) -> torch.Tensor:
    """What a net of this prediction type learns to output: noise, x0 or v, each (B,C,H,W); ab (B,1,1,1)."""
    if prediction == "x0":
        return x0
    if prediction == "v":
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0
    if prediction == "eps":
        return noise
    raise SpriteDiffError(f"bad --prediction: {prediction!r}; choose from {', '.join(PREDICTION_TYPES)}")


def run_schedule(config: TrainConfig) -> Schedule:
    """The course's schedule over config.T steps, its terminal SNR rescaled when config.terminal_snr is set."""
    try:
        return Schedule.course(config.T, terminal_snr=config.terminal_snr or None)
    except ValueError as err:
        raise SpriteDiffError(f"bad --terminal-snr: {err}") from None


class Trainer:
    """Holds the live net, its EMA, the optimizer and the step; saves and restores all of them."""

    def __init__(self, config: TrainConfig, data: SpriteData, device: torch.device, world: World = World()):
        config.check()
        check_trainable(data)
        if config.batch % world.size:
            raise SpriteDiffError(f"--batch {config.batch} must be divisible by the {world.size} processes")
        self.config, self.data, self.device, self.world = config, data, device, world
        self.schedule = run_schedule(config)
        n_cfeat = data.labels.shape[1] if data.labels is not None else 0  # no labels: no classes, no context
        with torch.random.fork_rng(devices=[]):  # the initial weights, from the seed; the caller's RNG is left alone
            torch.manual_seed(config.seed)
            self.net = ContextUnet(data.images.shape[-1], config.n_feat, n_cfeat, data.images.shape[1],
                                   config.norm).to(device)
        if config.precision == "bf16":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = AveragedModel(self.net, multi_avg_fn=ema_update(config.ema, config.ema_warmup),
                                 use_buffers=config.bn_stats == "ema")  # live: copied, not averaged (train_step)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.step = 0
        self.alphas_cumprod = self.schedule.alphas_cumprod.float().to(device)
        self.images = data.images.to(device)
        self.labels = None if data.labels is None else data.labels.to(device)
        self.model = self.net
        if world.size > 1:
            self.model = DistributedDataParallel(sync_batchnorm(self.net, device))

    def start_from(self, model: SpriteModel, name: str) -> None:
        """Fine-tuning: the live net (and so its EMA, which copies it at the first step) takes model's weights.

        The optimizer and the learning-rate schedule start fresh; model must have this run's net, schedule and
        prediction target."""
        theirs, ours = model.net.config(), self.net.config()
        if theirs != ours:
            diff = ", ".join(f"{k} {theirs[k]} vs {ours[k]}" for k in ours if theirs.get(k) != ours[k])
            raise SpriteDiffError(f"--init {name} does not fit this run ({diff}); pass its --n-feat and data of "
                                  f"its size, channels and class count")
        if model.schedule.to_config() != self.schedule.to_config() or model.prediction_type != self.config.prediction:
            raise SpriteDiffError(f"--init {name} has the schedule {model.schedule.to_config()} and predicts "
                                  f"{model.prediction_type}; this run has {self.schedule.to_config()} and --prediction "
                                  f"{self.config.prediction}")
        self.net.load_state_dict(model.net.state_dict())

    def lr_at(self, step: int) -> float:
        """The course's linear decay, to 0 at the run's end (or at lr_decay_steps, past it)."""
        return self.config.lr * (1 - step / (self.config.lr_decay_steps or self.config.steps))

    def train_step(self) -> float:
        """One optimizer step on this rank's shard of the global batch; returns the global batch's loss."""
        config, shard = self.config, self.world.shard(self.config.batch)
        rows = batch_indices(self.step, config.batch, len(self.data), config.seed)[shard].to(self.device)
        _, height, width, channels = self.images.shape
        t, noise, keep, input_noise = (v[shard].to(self.device)
                                       for v in step_draws(config, self.step, (channels, height, width)))
        x0 = to_model_space(self.images[rows])
        c = None if self.labels is None else self.labels[rows] * keep[:, None]
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = diffusion_loss(self.model, x0, c, t, noise, self.alphas_cumprod, config.T, config.precision,
                              config.prediction, config.min_snr_gamma, input_noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.ema.update_parameters(self.net)
        if config.bn_stats == "live":
            copy_live_statistics(self.net, self.ema.module)
        self.step += 1
        if self.world.size > 1:
            torch.distributed.all_reduce(loss := loss.detach().clone())
            loss /= self.world.size
        return float(loss.detach())

    def state(self) -> dict:
        return {"config": asdict(self.config), "step": self.step, "net": self.net.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict()}

    def save_state(self, path: Path) -> None:
        write_atomically(path, lambda tmp: torch.save(self.state(), tmp))

    def load_state(self, path: Path) -> None:
        """Restore everything from a training checkpoint; the run's config must match, except that a finished
        run may be extended to a larger `steps` (its learning rate then decays over the new total)."""
        state = read_state(path, self.device)
        check_resumable(state, asdict(self.config), path)
        check_same_images(state["net"], self.net, path)
        try:
            self.net.load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise SpriteDiffError(f"cannot resume from {path}: its weights do not fit this run's model "
                                  f"(other data size or class count?): {reason}") from None
        self.step = state["step"]

    def ema_model(self, info: dict) -> SpriteModel:
        """The EMA weights as a CPU SpriteModel (what a run saves)."""
        return self._as_model(self.ema.module, info)

    def raw_model(self, info: dict) -> SpriteModel:
        """The live training weights as a CPU SpriteModel (for comparing against the EMA)."""
        return self._as_model(self.net, {**info, "weights": "raw training weights (no EMA)"})

    def _as_model(self, source: nn.Module, info: dict) -> SpriteModel:
        net = ContextUnet.from_config(self.net.config())
        net.load_state_dict({k: v.cpu().contiguous() for k, v in source.state_dict().items()})
        classes = self.data.classes
        return SpriteModel(net.eval(), self.schedule, classes, info, prediction_type=self.config.prediction,
                           class_mix=self.class_mix())

    def class_mix(self) -> tuple[float, ...] | None:
        """Each class's share of the training labels (None without labels, or all-zero ones): what `sample`
        draws classes from."""
        counts = None if self.labels is None else self.labels.double().sum(0)
        if counts is None or counts.sum() <= 0:
            return None
        return tuple((counts / counts.sum()).tolist())


def fit_to_time(config: TrainConfig, data: SpriteData, device: torch.device, seconds: float,
                probe_steps: int = PROBE_STEPS) -> tuple[TrainConfig, dict]:
    """config with `steps` and `ema` chosen so that the run fits `seconds` of wall time, and the record of how.

    A throwaway Trainer times probe_steps steps after PROBE_WARMUP untimed ones on this machine; the run gets as
    many steps as the rest of the budget holds at that pace (at least 1), its learning rate decays to 0 over them,
    and its EMA decay is 1 - 1 / (EMA_LENGTH * steps), capped at config.ema, so the saved weights average the
    run's last tenth however short it is. The length is fixed before the run starts: a resumed run repeats it
    exactly."""
    start = time.perf_counter()
    probe = Trainer(replace(config, steps=MAX_STEPS), data, device)
    for _ in range(PROBE_WARMUP):
        probe.train_step()
    timed = time.perf_counter()
    for _ in range(probe_steps):
        probe.train_step()
    per_step = (time.perf_counter() - timed) / probe_steps
    steps = max(1, int((seconds - (time.perf_counter() - start)) / per_step))
    ema = max(0.0, min(config.ema, 1 - 1 / (EMA_LENGTH * steps)))
    record = {"time_budget_s": round(seconds, 1), "probe_seconds_per_step": round(per_step, 4),
              "probe_steps": probe_steps}
    return replace(config, steps=steps, ema=round(ema, 6)), record


def read_state(path: Path, device: torch.device | str = "cpu") -> dict:
    """A training checkpoint (torch.save of Trainer.state()), read without unpickling code and checked for its keys."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for empty, truncated or foreign files
        raise SpriteDiffError(f"cannot resume from {path}: not a readable training checkpoint "
                              f"({unreadable_reason(err)})") from None
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing or not isinstance(state["config"], dict) or not _is_count(state["step"], 0) or \
            not _is_count(state["config"].get("steps"), 1):
        raise SpriteDiffError(f"cannot resume from {path}: not a spritediff training checkpoint "
                              f"(missing or bad: {', '.join(missing) or 'config or step'})")
    return state


def _is_count(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_resumable(state: dict, config: dict, path: Path) -> None:
    """A user error unless the checkpoint's run can continue with config: same settings, more steps to do.

    A setting the checkpoint predates (e.g. precision) counts as what that run did: its default, or PREDATED's."""
    saved, done = {**asdict(TrainConfig()), **PREDATED, **state["config"]}, state["step"]
    diff = {k: v for k, v in saved.items() if config.get(k) != v and k != "steps"}
    if diff:
        raise SpriteDiffError(f"{path} was made with other settings ({diff}); resume with the same ones")
    total = saved.get("steps")
    if done >= total and config["steps"] <= done:
        raise SpriteDiffError(f"the run in {path} is finished ({done} of {total} steps); to train it longer, "
                              f"resume with a larger --steps (more than {done})")
    if done < total and config["steps"] != total:
        raise SpriteDiffError(f"the run in {path} stopped at step {done} of {total}; resume it with --steps {total} "
                              f"(a run can be extended once it has finished)")


def saved_config(path: Path) -> dict:
    """The settings of the run whose training checkpoint is path; one it predates counts as what that run did:
    its default, or PREDATED's."""
    if not path.is_file():
        raise SpriteDiffError(f"--resume: no training checkpoint {path}")
    return {**asdict(TrainConfig()), **PREDATED, **read_state(path)["config"]}


def checkpoint_steps(out: Path) -> int:
    """The total steps of the run whose checkpoint is beside out (for --resume without --steps)."""
    path = state_path(out)
    if not path.is_file():
        raise SpriteDiffError(f"--resume: no training checkpoint {path}")
    return read_state(path)["config"]["steps"]


def check_same_images(saved_net: dict, net: ContextUnet, path: Path) -> None:
    """A user error unless the checkpoint's net was trained on images like this run's data (size and channels).

    Sizes are read from the weights' shapes; a checkpoint without those keys is left to the strict load."""
    try:
        channels = saved_net["init_conv.conv1.0.weight"].shape[1]  # (n_feat, in_channels, 3, 3)
        height = 4 * saved_net["up0.0.weight"].shape[-1]  # (2 n_feat, 2 n_feat, H/4, H/4)
    except (KeyError, IndexError, AttributeError, TypeError):
        return
    if (channels, height) != (net.in_channels, net.height):
        raise SpriteDiffError(f"cannot resume from {path}: its run trained on {image_kind(height, channels)} images, "
                              f"this data is {image_kind(net.height, net.in_channels)}; resume with the same data "
                              f"(and --channels)")


def check_run_files(out: Path, resume: bool, overwrite: bool) -> None:
    """Before any work: a new run must not silently replace an existing one at out; --resume needs one."""
    if resume and overwrite:
        raise SpriteDiffError("--resume and --overwrite exclude each other")
    existing = [p.name for p in (out, state_path(out), log_path(out)) if p.exists()]
    if existing and not (resume or overwrite):
        raise SpriteDiffError(f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it or "
                              f"--overwrite to start over")
    if resume and not state_path(out).is_file():
        raise SpriteDiffError(f"--resume: no training checkpoint {state_path(out)}")


def check_trainable(data: SpriteData) -> None:
    """ContextUnet takes square RGB or RGBA images of a multiple of 4 from 8 to 64 pixels and at least one class
    (if labelled)."""
    _, height, width, channels = data.images.shape
    if height not in MODEL_HEIGHTS or width != height or channels not in CHANNEL_NAMES:
        raise SpriteDiffError(f"training data must be square RGB or RGBA images of a multiple of 4 from "
                              f"{MODEL_HEIGHTS[0]} to {MODEL_HEIGHTS[-1]} pixels (ContextUnet's sizes), "
                              f"got {height}x{width}x{channels}")
    if data.labels is not None and data.labels.shape[1] < 1:
        raise SpriteDiffError("training labels must have at least one class column")


def state_path(out: Path) -> Path:
    """The resumable training checkpoint beside the model file."""
    return out.with_name(out.stem + ".train.pt")


def checkpoint_kept(out: str, read_state) -> str:
    """What a stopped run of train or distill keeps: the step of its last checkpoint beside OUT (read by its own
    read_state), and OUT written from it; or that nothing was written yet."""
    state = state_path(model_out_path(out))
    if not state.is_file():
        return "no checkpoint was written yet, nothing is left of this run"
    try:
        step = read_state(state)["step"]
    except SpriteDiffError:
        return f"the run's last checkpoint is {state}"
    return f"the run is kept as of its last checkpoint, step {step} ({state}, and {out} from it); --resume goes on"


def log_path(out: Path) -> Path:
    return out.with_name(out.stem + ".log.jsonl")


def snapshot_path(out: Path, step: int, raw: bool = False) -> Path:
    """Where a snapshot of the EMA (or raw) weights at `step` is kept: OUT-step1000[-raw].safetensors."""
    return out.with_name(f"{out.stem}-step{step}{'-raw' if raw else ''}{out.suffix}")


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def run_training(config: TrainConfig, data: SpriteData, out: Path, device: torch.device, ckpt_every: int = 1000,
                 resume: bool = False, progress: bool = True, data_name: str = "", dtype=torch.float16,
                 snapshots: tuple[int, ...] = (), overwrite: bool = False, record: dict | None = None) -> SpriteModel:
    """Train, checkpointing every ckpt_every steps and at the end; returns the EMA model written to out.

    At each step in `snapshots` the EMA and raw weights are also kept (snapshot_path), to measure
    quality along the run. An existing run at out is continued (resume) or replaced (overwrite); with
    neither, it is a user error. record: what the model's info keeps of how the run was set up (fit_to_time's)."""
    device = local_device(device)
    world = init_world(device)
    try:
        check_run_files(out, resume, overwrite)
        trainer = Trainer(config, data, device, world)
        if resume:
            trainer.load_state(state_path(out))
        elif config.init:  # before --overwrite removes anything: a model that does not fit loses nothing
            trainer.start_from(load_model(config.init), config.init)
        if overwrite and world.is_main:
            state_path(out).unlink(missing_ok=True)
            log_path(out).unlink(missing_ok=True)
        try:
            return _train_loop(trainer, out, ckpt_every, progress and world.is_main, data_name, dtype, set(snapshots),
                               record or {})
        except BaseException:
            if world.is_main and not resume and not state_path(out).exists():
                log_path(out).unlink(missing_ok=True)  # a new run that never checkpointed leaves no half a run
            raise
    finally:
        close_world(world)


def _train_loop(trainer: Trainer, out: Path, ckpt_every: int, progress: bool, data_name: str, dtype,
                snapshots: set[int], record: dict) -> SpriteModel:
    config, world = trainer.config, trainer.world
    info = {**record, "weights": f"EMA (decay {config.ema}) of the training weights", "command": command_line(),
        "data": data_name, "config": asdict(config), "world_size": world.size,
        "machine": machine_name(trainer.device), "torch": torch.__version__}
    if is_course_sprites(trainer.data.images.numpy()):  # the credit line belongs to the course's sprites only
        info["credit"] = CREDIT
    start, first_step = time.perf_counter(), trainer.step
    bar = tqdm(total=config.steps, initial=trainer.step, disable=not progress or None, unit="step", dynamic_ncols=True)
    with open(log_path(out), "a") if world.is_main else open(os.devnull, "w") as log:
        while trainer.step < config.steps:
            loss = trainer.train_step()
            if not math.isfinite(loss):
                kept = (f"the last good checkpoint is kept ({state_path(out)})" if state_path(out).is_file()
                        else "no checkpoint was written")
                raise SpriteDiffError(f"loss became {loss} at step {trainer.step}; stopped, {kept}; try a lower --lr")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if world.is_main:
                entry = {"step": trainer.step, "loss": round(loss, 6), "lr": trainer.lr_at(trainer.step - 1),
                         "seconds": round(time.perf_counter() - start, 3)}
                log.write(json.dumps(entry, allow_nan=False) + "\n")
            if trainer.step in snapshots and world.is_main:
                info.update(steps_done=trainer.step)
                save_model(trainer.ema_model(info), snapshot_path(out, trainer.step), dtype)
                save_model(trainer.raw_model(info), snapshot_path(out, trainer.step, raw=True), dtype)
            if trainer.step % ckpt_every == 0 or trainer.step == config.steps:
                log.flush()
                info.update(steps_done=trainer.step, wall_seconds=round(time.perf_counter() - start, 1),
                            steps_this_run=trainer.step - first_step,
                            date=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
                if world.is_main:
                    trainer.save_state(state_path(out))
                    save_model(trainer.ema_model(info), out, dtype)
    bar.close()
    return trainer.ema_model(info)
