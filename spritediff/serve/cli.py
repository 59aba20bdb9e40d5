"""`spritediff serve`: the parser, and run_serve, which loads the model, binds the socket and runs uvicorn.

Importing this module imports neither Starlette nor uvicorn (`spritediff --help` stays light); run_serve does,
and says which extra to install if they are missing.
"""
from __future__ import annotations

import ipaddress
import socket
import sys

from ..errors import SpriteDiffError
from .config import BATCH_ROWS, ServeConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
STOP_GRACE_S = 5  # on Ctrl-C or SIGTERM, runs still streaming after this are cancelled


def add_serve_parser(sub) -> None:
    from ..arguments import add_device_argument, add_model_argument, bounded_int, positive_float, positive_int
    from ..checks import PRECISIONS

    d = ServeConfig()
    p = sub.add_parser("serve",
                       description="Serve the playground page: sample with live frames, race DDPM-500 against "
                                   "DDIM-20 and a few-step solver, invert, interpolate, vary and inpaint sprites. "
                                   "Requests that arrive together share model calls (dynamic batching). Needs pip "
                                   "install 'spritediff[web]'. Sprites by ElvGames, FrootsnVeggies and kyrise.")
    add_model_argument(p)
    p.add_argument("--student", metavar="MODEL",
                   help="a distilled student of --model (spritediff distill): the Race gets a fourth lane, the student "
                        "on its own grid from the same noise and context (default: 'distilled', the shipped student, "
                        "for the default model, none for another; 'none': no fourth lane)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 opens it to the "
                        f"network, with no login)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one and prints it)")
    add_device_argument(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32 (exact), bf16 (the net under bf16 autocast) or auto (default: bf16 on a CPU with native "
                        "bf16, else fp32), as spritediff sample's --precision")
    p.add_argument("--max-active", type=bounded_int(1, 1024), default=d.max_active,
                   help=f"requests that sample at once, their model calls merged (default {d.max_active})")
    p.add_argument("--queue", type=bounded_int(0, 10_000), default=d.queue,
                   help=f"requests that may wait for a slot; more get 503 busy (default {d.queue})")
    p.add_argument("--max-batch-rows", type=positive_int,
                   help=f"net rows per merged model call at most; a guided sprite is 2 rows (default "
                        f"{BATCH_ROWS['cpu']} on the CPU, {BATCH_ROWS['cuda']} on CUDA)")
    p.add_argument("--batch-wait-ms", type=positive_float, default=d.batch_wait_ms,
                   help=f"how long a model call may wait for the other running requests' calls (default "
                        f"{d.batch_wait_ms:g} ms)")
    p.add_argument("--no-batching", action="store_true",
                   help="one request at a time, no merged calls (the baseline of benchmarks/serve_batching.py)")
    p.add_argument("--max-n", type=bounded_int(1, 1024), default=d.max_n,
                   help=f"sprites per sample request at most (default {d.max_n})")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="warning",
                   help="uvicorn's log level (default warning; info logs every request)")
    p.set_defaults(run=run_serve)


def run_serve(args) -> int:
    uvicorn, create_app = _web_modules()
    from ..checkpoint import load_model
    from ..engine import resolve_device

    config = ServeConfig(max_active=args.max_active, queue=args.queue, max_batch_rows=args.max_batch_rows,
                         batch_wait_ms=args.batch_wait_ms, batching=not args.no_batching, max_n=args.max_n,
                         precision=args.precision)
    model, device = load_model(args.model), resolve_device(args.device)
    student = raced_student(args.model, args.student)
    listener = bind(args.host, args.port)
    hosts = None if is_loopback(args.host) else ["*"]
    app = create_app(model, device, config, allowed_hosts=hosts, student=student)
    host, port = listener.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"spritediff serve: http://{shown_host}:{port}/ ({model.path or 'default model'} on {device}; Ctrl-C "
          f"stops)", flush=True)
    if not is_loopback(args.host):
        print(f"spritediff serve: warning: listening on {args.host}, reachable from other machines, with no login",
              file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, lifespan="on",
                                           timeout_graceful_shutdown=STOP_GRACE_S))
    return _serve(server, listener)


def raced_student(model: str | None, student: str | None):
    """The Race's fourth lane: the --student given ('none': no lane), else the shipped distilled student of the
    shipped default model, else none."""
    from ..checkpoint import load_model

    if student is None:
        student = "distilled" if model in (None, "default") else "none"
    return None if student == "none" else load_model(student)


def _serve(server, listener: socket.socket) -> int:
    """Run until Ctrl-C or SIGTERM (uvicorn stops gracefully, then re-raises the signal; that is a clean stop)."""
    from ..interrupts import Terminated

    try:
        server.run(sockets=[listener])
    except (KeyboardInterrupt, Terminated):
        pass
    finally:
        listener.close()
    print("spritediff serve: stopped", file=sys.stderr, flush=True)
    return 0


def _web_modules():
    try:
        import uvicorn

        from .app import create_app
    except ImportError as err:
        raise SpriteDiffError(f"spritediff serve needs the web extra (missing {err.name}): "
                              f"pip install 'spritediff[web]'") from None
    return uvicorn, create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6 as the host is); a one-line error if it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except (OSError, UnicodeError) as err:
        raise SpriteDiffError(f"cannot listen on {host}:{port}: {getattr(err, 'strerror', None) or err}") from None
    return listener


def is_loopback(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1): only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
