"""The playground's HTTP API and page, as a Starlette app (create_app).

    GET  /                                 the page (static/index.html); /static/app.js, /static/style.css
    GET  /api/info                         model, classes, samplers with their declared options, limits
    GET  /api/status                       running and waiting requests, batching counters
    POST /api/sample                       NDJSON stream: accepted, [queued], running, frame..., done | error
    POST /api/race                         NDJSON stream of three lanes (ddpm, ddim, a solver), each as above;
                                           a fourth, "student", with `serve --student`
    POST /api/edit                         JSON: one edit operation's result (reconstruct, interpolate, ...)
    GET  /api/results/{id}/{kind}          downloads made in memory: grid.png, denoise.gif, samples.npy

Every error is JSON {"error": "one line"}: 400 for a bad field, 413 too large, 415 not JSON, 404, 405, 503 busy
(with Retry-After), 500 only for a bug (logged on the server, never a traceback in the answer).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from functools import partial
from importlib import resources
from pathlib import Path

import anyio
import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..checkpoint import SpriteModel
from ..defaults import DEFAULT_GUIDANCE, DEFAULTS, PLAYGROUND_SAMPLE, default_steps
from ..errors import SpriteDiffError
from ..engine import Engine
from ..fast import resolve_precision
from ..latent.api import METHODS
from ..samplers import REGISTRY
from .batcher import ModelBatcher
from .config import ServeConfig
from .edits import run_edit
from .images import frame_url
from .jobs import END, Busy, Job, Scheduler
from .results import DOWNLOADS, ResultStore, download, worst_result_bytes
from .runs import run_sample
from .validation import (DEFAULT_SOLVER, EDIT_OPS, RACE_LANES, STUDENT_LANE, HTTPError, parse_edit, parse_json,
                         parse_race, parse_sample, race_solvers)

LOG = logging.getLogger("spritediff.serve")
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {  # the page loads nothing from elsewhere: no CDN, no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class Playground:
    """What the routes share: the model, its net on the device behind one ModelBatcher, the Scheduler, the
    ResultStore and the static files."""

    def __init__(self, model: SpriteModel, device: torch.device, config: ServeConfig,
                 student: SpriteModel | None = None):
        check_student_lane(model, student)
        self.model, self.device, self.config, self.student = model, device, config, student
        self.precision = resolve_precision(config.precision, device)
        self.batcher = self._batcher(model)
        self.student_batcher = None if student is None else self._batcher(student)  # its own net, its own calls
        self.store = ResultStore(config.results_keep_s, int(config.results_budget_mb * 2**20))
        worst = worst_result_bytes(config, model.net.height**2 * model.net.in_channels)
        self.scheduler = Scheduler(config.active_limit, config.queue, partial(self.store_room, worst=worst))
        folder = resources.files(__package__) / "static"
        self.page = (folder / "index.html").read_bytes()
        self.static = {name: (folder / name).read_bytes() for name in STATIC}
        self.info = model_info(model, device, config, student) | {"precision": self.precision}

    def _batcher(self, model: SpriteModel) -> ModelBatcher:
        net = Engine(model, self.device, fast=True).net  # prepared as spritediff.sample's default fast path (a copy)
        return ModelBatcher(net, self.device, self.config.batch_rows(self.device.type),
                            self.config.batch_wait_ms / 1000, bf16=self.precision == "bf16")

    def lane_model(self, request) -> tuple[SpriteModel, ModelBatcher]:
        """The model and batcher a race lane (or a sample request) runs on: the student's for its lane."""
        if request.lane == STUDENT_LANE:
            return self.student, self.student_batcher
        return self.model, self.batcher

    def store_room(self, in_flight: int, worst: int) -> str | None:
        """None if the kept results and a worst-case result of each of in_flight requests fit the store's
        budget, else the reason to refuse a new request (so no result shown is ever dropped early)."""
        if self.store.has_room(in_flight, worst):
            return None
        return (f"the results of the last {self.config.results_keep_s / 60:g} minutes fill the "
                f"{self.config.results_budget_mb:g} MB kept for their downloads")

    def close(self) -> None:
        self.scheduler.cancel_all()
        self.batcher.close()
        if self.student_batcher is not None:
            self.student_batcher.close()


def check_student_lane(model: SpriteModel, student: SpriteModel | None) -> None:
    """The playground serves an ordinary model (its panels run any sampler and guidance, which a distilled student
    refuses); a student races beside it as a fourth lane, drawing the same sprites' kind from the same contexts."""
    if model.student is not None:
        raise SpriteDiffError(f"the playground's model is {model.student.describe()}, which samples only on its own "
                              f"grid; serve its teacher and race the student with --student")
    if student is None:
        return
    if not isinstance(student, SpriteModel) or student.student is None:
        raise SpriteDiffError("--student must be a distilled student (spritediff distill); this model is not one")
    if (student.net.height, student.net.in_channels, student.classes) != (model.net.height, model.net.in_channels,
                                                                          model.classes):
        raise SpriteDiffError("--student must make the served model's kind of sprites with its classes (size, "
                              "channels and class names differ)")


def model_info(model: SpriteModel, device: torch.device, config: ServeConfig,
               student: SpriteModel | None = None) -> dict:
    """GET /api/info: what the page builds its controls from."""
    T = model.schedule.T
    high = min(T, config.max_steps)
    samplers = {name: {"default_steps": min(default_steps(PLAYGROUND_SAMPLE, name, T), high),
                       "options": {key: _option_info(option) for key, option in entry.options.items()}}
                for name, entry in REGISTRY.items()}
    return {"model": {"name": "default model" if model.path is None else Path(model.path).name,
                      "classes": list(model.classes), "size": model.net.height, "T": T,
                      "credit": model.info.get("credit"), "device": str(device),
                      "class_mix": None if model.class_mix is None else list(model.class_mix)},
            "samplers": samplers, "max_steps": high, "default_guidance": DEFAULT_GUIDANCE,
            "defaults": {name: defaults.public() for name, defaults in DEFAULTS.items()},
            "race": {"lanes": list(RACE_LANES), "solvers": race_solvers(), "default_solver": DEFAULT_SOLVER,
                     "student": None if student is None else {
                         "lane": STUDENT_LANE, "steps": student.student.calls, "guidance": student.student.guidance,
                         "name": Path(student.path).name if student.path else "student"}},
            "edit": {"ops": list(EDIT_OPS), "methods": list(METHODS)},
            "limits": config.public() | {"max_batch_rows": config.batch_rows(device.type)}}


def _option_info(option) -> dict:
    return {"kind": option.kind.__name__, "default": option.default, "help": option.help,
            "choices": list(option.choices) if option.choices else None, "low": option.low, "high": option.high,
            "allowed": option.allowed()}


def create_app(model: SpriteModel, device: torch.device | str = "cpu", config: ServeConfig | None = None,
               allowed_hosts: list[str] | None = None, student: SpriteModel | None = None) -> Starlette:
    """The playground app for `model` on `device`. allowed_hosts: Host headers accepted (default: loopback
    names only, so that a web page elsewhere cannot reach the server by DNS rebinding); ["*"] for any.
    student: a distilled student of the model, raced as the Race's fourth lane."""
    playground = Playground(model, torch.device(device), config or ServeConfig(), student)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        playground.close()

    routes = [Route("/", partial(page, playground)),
              Route("/static/{name}", partial(static, playground)),
              Route("/api/info", partial(info, playground)),
              Route("/api/status", partial(status, playground)),
              Route("/api/sample", partial(sample, playground), methods=["POST"]),
              Route("/api/race", partial(race, playground), methods=["POST"]),
              Route("/api/edit", partial(edit, playground), methods=["POST"]),
              Route("/api/results/{result_id}/{kind}", partial(result_download, playground))]
    handlers = {SpriteDiffError: bad_request, HTTPError: http_error, Busy: busy, HTTPException: starlette_error,
                Exception: internal_error}
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)]
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=middleware, lifespan=lifespan)
    app.state.playground = playground
    return app


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status, headers=headers)


async def bad_request(request: Request, exc: SpriteDiffError) -> JSONResponse:
    return error(400, str(exc))


async def http_error(request: Request, exc: HTTPError) -> JSONResponse:
    return error(exc.status, str(exc))


async def busy(request: Request, exc: Busy) -> JSONResponse:
    return error(503, str(exc), {"Retry-After": "2"})


async def starlette_error(request: Request, exc: HTTPException) -> JSONResponse:
    messages = {404: "not found", 405: "method not allowed"}
    return error(exc.status_code, messages.get(exc.status_code, exc.detail))


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    LOG.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal error; see the server log")


async def page(playground: Playground, request: Request) -> Response:
    return Response(playground.page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def static(playground: Playground, request: Request) -> Response:
    """One of the fixed files in STATIC, looked up by name in a dict (never a path on disk)."""
    name = request.path_params["name"]
    if name not in playground.static:
        return error(404, "not found")
    return Response(playground.static[name], media_type=STATIC[name], headers=PAGE_HEADERS)


async def info(playground: Playground, request: Request) -> JSONResponse:
    return JSONResponse(playground.info)


async def status(playground: Playground, request: Request) -> JSONResponse:
    return JSONResponse({**playground.scheduler.status(), "batching": playground.batcher.stats.public(),
                         "results": playground.store.usage()})


async def read_json(request: Request, limit: int) -> dict:
    """The request's JSON object, read up to `limit` bytes: 415 unless JSON, 413 beyond the limit."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPError(415, "send the request body as JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"the request body is larger than {limit // 1024} KiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPError(413, f"the request body is larger than {limit // 1024} KiB")
    return parse_json(bytes(body))


async def sample(playground: Playground, request: Request) -> StreamingResponse:
    """Stream one sample run: its frames while it runs, then the grid, NFE and seconds."""
    checked = parse_sample(await read_json(request, playground.config.max_body_bytes), playground.model,
                           playground.config)
    work = partial(run_sample, request=checked, model=playground.model, batcher=playground.batcher,
                   store=playground.store, interval=playground.config.frame_interval_s)
    accepted = {"type": "accepted", "settings": checked.settings(playground.model.classes)}
    return stream_jobs(playground, [(None, work)], accepted)


async def race(playground: Playground, request: Request) -> StreamingResponse:
    """Stream the race: DDPM, DDIM and a solver from the same noise, their frames interleaved, lane by name."""
    checked = parse_race(await read_json(request, playground.config.max_body_bytes), playground.model,
                         playground.config, playground.student)
    works = [(lane.name, lane_work(playground, lane)) for lane in checked.lanes]
    accepted = {"type": "accepted", "lanes": [{"lane": lane.name, "steps": lane.steps} for lane in checked.lanes]}
    return stream_jobs(playground, works, accepted)


def lane_work(playground: Playground, lane):
    """One race lane's work, on its model's batcher (the student's for the student lane)."""
    model, batcher = playground.lane_model(lane)
    return partial(run_sample, request=lane, model=model, batcher=batcher, store=playground.store,
                   interval=playground.config.frame_interval_s)


def stream_jobs(playground: Playground, works: list, accepted: dict) -> StreamingResponse:
    """Admit one job per (lane, work) (all or none: 503 when busy) and stream their events as NDJSON lines."""
    queue: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    jobs = [Job(work, queue, loop, lane) for lane, work in works]
    playground.scheduler.submit(jobs)
    return StreamingResponse(event_lines(playground, jobs, queue, accepted), media_type="application/x-ndjson",
                             headers=STREAM_HEADERS)


async def event_lines(playground: Playground, jobs: list[Job], queue: asyncio.Queue, accepted: dict):
    """NDJSON lines until every job has ended. If the client goes away, Starlette cancels this generator and
    the jobs are cancelled: a waiting one leaves the queue, a running one stops at its next step."""
    left = len(jobs)
    try:
        yield line(accepted)
        while left:
            events = [await queue.get()]
            while not queue.empty():
                events.append(queue.get_nowait())
            for event in latest_frames(events):
                if event is END:
                    left -= 1
                else:
                    yield line(await encode_frame(event))
    finally:
        for job in jobs:
            if not job.finished.is_set():
                playground.scheduler.cancel(job)


def latest_frames(events: list) -> list:
    """The events in order, less any frame that a later frame of the same lane in this list replaces (a slow
    client gets the newest frame, not a backlog)."""
    last = {}
    for i, event in enumerate(events):
        if event is not END and event.get("type") == "frame":
            last[event.get("lane")] = i
    return [event for i, event in enumerate(events)
            if event is END or event.get("type") != "frame" or last[event.get("lane")] == i]


async def encode_frame(event: dict) -> dict:
    """A frame event's uint8 pair as a PNG data URL (encoded off the event loop)."""
    if "pair" not in event:
        return event
    pair = event.pop("pair")
    return {**event, "image": await anyio.to_thread.run_sync(frame_url, *pair)}


def line(event: dict) -> bytes:
    return (json.dumps(event, allow_nan=False, separators=(",", ":")) + "\n").encode()


async def edit(playground: Playground, request: Request) -> JSONResponse:
    """One edit operation, answered as a whole (edits are short); 400 with the API's message if it refuses."""
    checked = parse_edit(await read_json(request, playground.config.max_body_bytes), playground.model,
                         playground.config)
    queue: asyncio.Queue = asyncio.Queue()
    work = partial(run_edit, request=checked, model=playground.model, batcher=playground.batcher,
                   store=playground.store)
    job = Job(work, queue, asyncio.get_running_loop())
    playground.scheduler.submit([job])
    final = await final_event(playground, job, queue, request)
    if final.get("type") == "done":
        return JSONResponse(final)
    status_code = 500 if final.get("internal") else 400
    return error(status_code, final.get("message", "the edit was cancelled"))


async def final_event(playground: Playground, job: Job, queue: asyncio.Queue, request: Request) -> dict:
    """The job's last event before END; the job is cancelled if the client goes away while it waits."""
    final: dict = {}
    getter = None
    try:
        while True:
            getter = getter or asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter}, timeout=0.5)
            if not done:
                if await request.is_disconnected():
                    getter.cancel()
                    return {"type": "cancelled"}
                continue
            event, getter = getter.result(), None
            if event is END:
                return final
            final = event
    finally:
        if not job.finished.is_set():
            playground.scheduler.cancel(job)


async def result_download(playground: Playground, request: Request) -> Response:
    """A result's grid.png, denoise.gif or samples.npy, made in memory; the id is only a dictionary key."""
    kind = request.path_params["kind"]
    item = playground.store.get(request.path_params["result_id"])
    if item is None or kind not in DOWNLOADS:
        return error(404, f"no such result (each result is kept {playground.config.results_keep_s / 60:g} minutes "
                          f"after it was made)")
    result, name = item
    data = await anyio.to_thread.run_sync(download, result, kind)
    if data is None:
        return error(404, f"this result has no {kind}")
    disposition = f'attachment; filename="spritediff-{name}-{kind}"'
    return Response(data, media_type=DOWNLOADS[kind], headers={"Content-Disposition": disposition,
                                                               "Cache-Control": "no-store"})
