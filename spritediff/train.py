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
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .checkpoint import CREDIT, SpriteModel, save_model, write_atomically
from .data import SpriteData
from .distributed import World, close_world, init_world, local_device, sync_batchnorm
from .errors import SpriteDiffError
from .models import ContextUnet
from .rng import keyed_generator
from .schedule import Schedule

COURSE_STEPS = 28_608  # 32 epochs over the course's 89,400 images at batch 100


@dataclass
class TrainConfig:
    """What defines a run; resuming requires the same values."""

    steps: int = COURSE_STEPS
    batch: int = 100
    lr: float = 1e-3
    n_feat: int = 64
    context_drop: float = 0.1
    ema: float = 0.999
    seed: int = 0
    T: int = 500

    def check(self) -> None:
        for name, ok in (("steps", self.steps >= 1), ("batch", self.batch >= 1), ("lr", self.lr > 0),
                         ("n_feat", self.n_feat >= 8 and self.n_feat % 8 == 0),
                         ("context_drop", 0 <= self.context_drop <= 1), ("ema", 0 <= self.ema < 1)):
            if not ok:
                raise SpriteDiffError(f"bad --{name.replace('_', '-')}: {getattr(self, name)}")


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
    """The global batch's random draws at this step: t (B,) in 1..T, noise (B,*shape), keep-context mask (B,)."""
    g = keyed_generator(config.seed, step, 0)
    t = torch.randint(1, config.T + 1, (config.batch,), generator=g)
    noise = torch.randn((config.batch, *shape), generator=g)
    keep = (torch.rand(config.batch, generator=g) >= config.context_drop).float()
    return t, noise, keep


def diffusion_loss(net: nn.Module, x0: torch.Tensor, c: torch.Tensor | None, t: torch.Tensor,
                   noise: torch.Tensor, alphas_cumprod: torch.Tensor, T: int) -> torch.Tensor:
    """MSE between the net's eps and the true noise at x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise."""
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    return nn.functional.mse_loss(net(x_t, t.to(x0.dtype) / T, c), noise)


class Trainer:
    """Holds the live net, its EMA, the optimizer and the step; saves and restores all of them."""

    def __init__(self, config: TrainConfig, data: SpriteData, device: torch.device, world: World = World()):
        config.check()
        if config.batch % world.size:
            raise SpriteDiffError(f"--batch {config.batch} must be divisible by the {world.size} processes")
        self.config, self.data, self.device, self.world = config, data, device, world
        self.schedule = Schedule.course(config.T)
        n_cfeat = data.labels.shape[1] if data.labels is not None else 5
        torch.manual_seed(config.seed)  # the initial weights
        self.net = ContextUnet(data.images.shape[-1], config.n_feat, n_cfeat, data.images.shape[1]).to(device)
        self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.step = 0
        self.alphas_cumprod = self.schedule.alphas_cumprod.float().to(device)
        self.images = data.images.to(device)
        self.labels = None if data.labels is None else data.labels.to(device)
        self.model = self.net
        if world.size > 1:
            self.model = DistributedDataParallel(sync_batchnorm(self.net, device))

    def lr_at(self, step: int) -> float:
        """The course's linear decay to 0 over the run."""
        return self.config.lr * (1 - step / self.config.steps)

    def train_step(self) -> float:
        """One optimizer step on this rank's shard of the global batch; returns the global batch's loss."""
        config, shard = self.config, self.world.shard(self.config.batch)
        rows = batch_indices(self.step, config.batch, len(self.data), config.seed)[shard].to(self.device)
        _, height, width, channels = self.images.shape
        t, noise, keep = (v[shard].to(self.device) for v in step_draws(config, self.step, (channels, height, width)))
        x0 = self.images[rows].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        c = None if self.labels is None else self.labels[rows] * keep[:, None]
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = diffusion_loss(self.model, x0, c, t, noise, self.alphas_cumprod, config.T)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.ema.update_parameters(self.net)
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
        """Restore everything from a training checkpoint; the run's config must match."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:
            raise SpriteDiffError(f"cannot resume from {path}: {str(err).splitlines()[0]}") from None
        if state["config"] != asdict(self.config):
            diff = {k: v for k, v in state["config"].items() if asdict(self.config).get(k) != v}
            raise SpriteDiffError(f"{path} was made with other settings ({diff}); resume with the same ones")
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]

    def ema_model(self, info: dict) -> SpriteModel:
        net = ContextUnet(self.net.in_channels, self.net.n_feat, self.net.n_cfeat, self.net.height)
        net.load_state_dict({k: v.cpu() for k, v in self.ema.module.state_dict().items()})
        classes = self.data.classes or ("hero", "non-hero", "food", "spell", "side-facing")
        return SpriteModel(net.eval(), self.schedule, classes, info)


def state_path(out: Path) -> Path:
    """The resumable training checkpoint beside the model file."""
    return out.with_name(out.stem + ".train.pt")


def log_path(out: Path) -> Path:
    return out.with_name(out.stem + ".log.jsonl")


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def run_training(config: TrainConfig, data: SpriteData, out: Path, device: torch.device, ckpt_every: int = 1000,
                 resume: bool = False, progress: bool = True, data_name: str = "", dtype=torch.float16) -> SpriteModel:
    """Train, checkpointing every ckpt_every steps and at the end; returns the EMA model written to out."""
    device = local_device(device)
    world = init_world(device)
    try:
        trainer = Trainer(config, data, device, world)
        if resume:
            if not state_path(out).is_file():
                raise SpriteDiffError(f"--resume: no training checkpoint {state_path(out)}")
            trainer.load_state(state_path(out))
        return _train_loop(trainer, out, ckpt_every, progress and world.is_main, data_name, dtype)
    finally:
        close_world(world)


def _train_loop(trainer: Trainer, out: Path, ckpt_every: int, progress: bool, data_name: str, dtype) -> SpriteModel:
    config, world = trainer.config, trainer.world
    info = {"weights": f"EMA (decay {config.ema}) of the training weights", "command": " ".join(
        ["spritediff"] + sys.argv[1:]) if Path(sys.argv[0]).name in ("spritediff", "__main__.py") else "python API",
        "data": data_name, "config": asdict(config), "world_size": world.size,
        "machine": machine_name(trainer.device), "torch": torch.__version__, "credit": CREDIT}
    start, first_step = time.perf_counter(), trainer.step
    bar = tqdm(total=config.steps, initial=trainer.step, disable=not progress or None, unit="step", dynamic_ncols=True)
    with open(log_path(out), "a") if world.is_main else open(os.devnull, "w") as log:
        while trainer.step < config.steps:
            loss = trainer.train_step()
            if not math.isfinite(loss):
                raise SpriteDiffError(f"loss became {loss} at step {trainer.step}; stopped. The last good "
                                      f"checkpoint is kept ({state_path(out)}); try a lower --lr")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if world.is_main:
                log.write(json.dumps({"step": trainer.step, "loss": round(loss, 6), "lr": trainer.lr_at(trainer.step - 1),
                                      "seconds": round(time.perf_counter() - start, 3)}) + "\n")
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
