"""Dynamic batching at the model call: the net calls of many running requests merged into one.

Each running request samples on its own thread with its own sampler loop (any sampler, any step count). Its
eps function calls a BatchedNet, which hands (x, t, c) to the one ModelBatcher and blocks; the batcher's
thread concatenates the calls that are waiting row-wise, runs the real net once and gives each caller its
rows back. Requests need not share a sampler, steps or guidance: the net sees only rows of (x_t, t/T,
context), and in eval mode each row's output depends on that row alone (up to float rounding, which may
differ between batch sizes). A DDPM-500 run thus shares every call with whatever else is running, and a
DDIM-20 request that arrives in the middle is done after 20 shared calls (continuous batching).

Lockstep: once a call is waiting, the batcher waits until every participant (a running request) has
submitted its next call, or until wait_s has passed, or until max_rows rows are waiting.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..checkpoint import SpriteModel


@dataclass
class _Call:
    """One caller's net input: x (B,C,H,W), t (B,) float t/T, c (B,K); the output (B,C,H,W) once done."""

    x: torch.Tensor
    t: torch.Tensor
    c: torch.Tensor
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return self.x.shape[0]


@dataclass
class BatchStats:
    """Counters since start: model calls, net rows, caller calls merged, and the largest call in rows."""

    model_calls: int = 0
    rows: int = 0
    merged_calls: int = 0
    max_rows: int = 0

    def add(self, calls: list[_Call]) -> None:
        rows = sum(call.rows for call in calls)
        self.model_calls += 1
        self.rows += rows
        self.merged_calls += len(calls)
        self.max_rows = max(self.max_rows, rows)

    def public(self) -> dict:
        mean = self.merged_calls / self.model_calls if self.model_calls else 0.0
        return {"model_calls": self.model_calls, "rows": self.rows, "max_rows": self.max_rows,
                "requests_per_call": round(mean, 3)}


class ModelBatcher:
    """Runs `net` on `device` for many threads, merging their concurrent calls (see the module docstring).

    max_rows: net rows per merged call at most (a single larger call still runs, alone); wait_s: seconds a
    waiting call may be held for the other participants; bf16: run the net under bf16 autocast, as
    Denoiser(bf16=True) does (autocast is per thread, so it is applied here, on the thread that runs the net).
    Inputs and outputs of callers are CPU float32.
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, max_rows: int = 1024, wait_s: float = 0.01,
                 bf16: bool = False):
        self.net, self.device, self.max_rows, self.wait_s, self.bf16 = net, device, max_rows, wait_s, bf16
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._participants = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="spritediff-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def participant(self):
        """Mark the calling thread as a running request for the lockstep wait, for the with-block."""
        with self._cond:
            self._participants += 1
        try:
            yield
        finally:
            with self._cond:
                self._participants -= 1
                self._cond.notify_all()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """net(x (B,C,H,W), t (B,) as t/T, c (B,K)) -> (B,C,H,W), computed in a merged call; blocks."""
        call = _Call(x.detach().float().cpu(), t.detach().float().reshape(-1).cpu(), c.detach().float().cpu())
        with self._cond:
            if self._closed:
                raise RuntimeError("the model batcher is closed (the server is stopping)")
            self._pending.append(call)
            self._cond.notify_all()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        """Stop the batcher thread; calls still waiting fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            calls = self._next_calls()
            if calls is None:
                return
            self._run(calls)

    def _next_calls(self) -> list[_Call] | None:
        """The calls of the next model call, after the lockstep wait; None once closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                for call in self._pending:
                    call.error = RuntimeError("the server is stopping")
                    call.done.set()
                return None
            deadline = self._pending[0].arrived + self.wait_s
            while self._waiting_for_more() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return self._take()

    def _waiting_for_more(self) -> bool:
        rows = sum(call.rows for call in self._pending)
        return not self._closed and len(self._pending) < self._participants and rows < self.max_rows

    def _take(self) -> list[_Call]:
        """The oldest waiting calls that fit in max_rows (always at least one); the rest keep waiting."""
        taken, rows = [], 0
        for call in self._pending:
            if taken and rows + call.rows > self.max_rows:
                break
            taken.append(call)
            rows += call.rows
        self._pending = self._pending[len(taken):]
        return taken

    def _run(self, calls: list[_Call]) -> None:
        """One net call over the rows of `calls`; each call gets its own rows back (or the error)."""
        try:
            x, t, c = (torch.cat([getattr(call, key) for call in calls]).to(self.device) for key in "xtc")
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.net(x, t, c).float().cpu()
            for call, rows in zip(calls, out.split([call.rows for call in calls])):
                call.result = rows
            self.stats.add(calls)
        except Exception as err:  # handed to every caller, whose request then reports it
            for call in calls:
                call.error = err
        finally:
            for call in calls:
                call.done.set()


class BatchedNet:
    """Stands in for a ContextUnet inside one request: net(x, t, c) goes to the shared ModelBatcher.

    It has what spritediff.engine reads of a net (n_cfeat, in_channels, height, to(), eval(), and state_dict(),
    the template's weights, for the finite check's diagnosis). check: called before every call; it raises to stop a
    cancelled request.
    """

    def __init__(self, batcher: ModelBatcher, template: torch.nn.Module, check=None):
        self.batcher, self.check, self.template = batcher, check, template
        self.n_cfeat, self.in_channels, self.height = template.n_cfeat, template.in_channels, template.height

    def state_dict(self) -> dict:
        return self.template.state_dict()

    def to(self, *args, **kwargs) -> "BatchedNet":
        return self

    def eval(self) -> "BatchedNet":
        return self

    def __call__(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """x (B,C,H,W), t (B,) or (B,1,1,1) as t/T, c (B,K) or None (zeros) -> eps (B,C,H,W) on x's device."""
        if self.check is not None:
            self.check()
        if c is None:
            c = x.new_zeros(x.shape[0], self.n_cfeat)
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.reshape(-1)
        return self.batcher(x, t, c).to(device=x.device, dtype=x.dtype)


def batched_model(model: SpriteModel, batcher: ModelBatcher, check=None) -> SpriteModel:
    """model with its net replaced by a BatchedNet: what a request hands to the engine (spritediff.sample's path)
    or to spritediff.latent's API, so that its model calls merge with the other running requests'."""
    return dataclasses.replace(model, net=BatchedNet(batcher, model.net, check))
