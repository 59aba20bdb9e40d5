"""Jobs and their admission: a bounded number run (one thread each), a bounded queue waits, the rest are "busy".

A Job is one request's work (a sample, a race lane, an edit). Its thread calls `work(job)`, which returns the
final event; along the way it may `emit` events (frames), which reach the HTTP response through an asyncio
queue on the server's event loop. `cancel` (the client went away) takes a waiting job out of the queue at once
and makes a running one stop at its next model call or step, so its slot is free for the next request.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Callable

from ..errors import SpriteDiffError

LOG = logging.getLogger("spritediff.serve")
END = None  # the last item a job puts on its queue


class Busy(Exception):
    """The queue is full: the request is refused (HTTP 503), nothing was started."""


class Cancelled(Exception):
    """Raised inside a job's thread once its client has gone away."""


class Job:
    """One request's work. work(job) -> the final event (a dict); events go to `queue` on `loop`.

    lane: a name added to every event (the race's lanes share one queue); None for a lone job.
    """

    def __init__(self, work: Callable[["Job"], dict], queue: asyncio.Queue, loop: asyncio.AbstractEventLoop,
                 lane: str | None = None):
        self.work, self.queue, self.loop, self.lane = work, queue, loop, lane
        self.cancelled = threading.Event()
        self.started_at: float | None = None
        self.finished = threading.Event()

    def emit(self, event: dict | None) -> None:
        """Send an event to the HTTP response (thread-safe); dropped if the server loop is gone."""
        if event is not None and self.lane is not None:
            event = {**event, "lane": self.lane}
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is stopping
            pass

    def check(self) -> None:
        """Raise Cancelled if the client has gone away (called before each model call and after each step)."""
        if self.cancelled.is_set():
            raise Cancelled()

    def run(self) -> None:
        """Run the work on the current thread; always emits a final event (done, error or cancelled). The
        Scheduler then frees the job's slot and emits END (see end)."""
        self.started_at = time.perf_counter()
        try:
            self.check()
            self.emit({"type": "running"})
            self.emit(self.work(self))
        except Cancelled:
            self.emit({"type": "cancelled"})
        except SpriteDiffError as err:
            self.emit({"type": "error", "message": " ".join(str(err).split())})
        except Exception:  # a bug or a device failure: logged here, one line to the client, no traceback
            LOG.exception("request failed")
            self.emit({"type": "error", "message": "internal error while running the request; see the server log",
                       "internal": True})

    def end(self) -> None:
        """Mark the job finished and close its event stream (after its slot is free)."""
        self.finished.set()
        self.emit(END)


class Scheduler:
    """At most `active` jobs run at once, each on its own thread; at most `queue` more wait, first come first
    served. submit() beyond that raises Busy, as it does when room(jobs in flight after admission) answers a
    reason (the result store's memory budget: app.Playground)."""

    def __init__(self, active: int, queue: int, room: Callable[[int], str | None] = lambda in_flight: None):
        self.active, self.capacity, self.room = active, active + queue, room
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()

    def submit(self, jobs: list[Job]) -> None:
        """Admit all of `jobs` or none (Busy); each waiting one is told how many jobs are ahead of it."""
        with self._lock:
            if len(self._running) + len(self._waiting) + len(jobs) > self.capacity:
                raise Busy(f"server busy: {len(self._running)} requests running and {len(self._waiting)} waiting "
                           f"(at most {self.capacity}); try again in a moment")
            reason = self.room(len(self._running) + len(self._waiting) + len(jobs))
            if reason is not None:
                raise Busy(f"server busy: {reason}; try again in a moment")
            self._waiting.extend(jobs)
            self._start_ready()
            for ahead, job in enumerate(self._waiting):
                if job in jobs:
                    job.emit({"type": "queued", "ahead": ahead})

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job if it waits (its END is sent), else stop it at its next step."""
        job.cancelled.set()
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
                job.end()

    def status(self) -> dict:
        with self._lock:
            return {"running": len(self._running), "waiting": len(self._waiting), "active_limit": self.active,
                    "capacity": self.capacity}

    def cancel_all(self) -> None:
        with self._lock:
            jobs = list(self._waiting) + list(self._running)
        for job in jobs:
            self.cancel(job)

    def _start_ready(self) -> None:
        """Start waiting jobs while slots are free (caller holds the lock)."""
        while self._waiting and len(self._running) < self.active:
            job = self._waiting.popleft()
            self._running.add(job)
            threading.Thread(target=self._run, args=(job,), name="spritediff-job", daemon=True).start()

    def _run(self, job: Job) -> None:
        try:
            job.run()
        finally:
            with self._lock:
                self._running.discard(job)
                self._start_ready()
            job.end()  # after the slot is free: a client that sees the end sees the server's status without it
