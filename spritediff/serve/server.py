"""The playground server on a background thread of this process (notebooks, tests): run_in_thread(app).

`spritediff serve` runs uvicorn in the foreground instead (cli.py); both listen on a socket bound beforehand,
so that port 0 (any free port) works and the caller knows the port before the first request.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn


@contextmanager
def run_in_thread(app, host: str = "127.0.0.1", port: int = 0, startup_s: float = 30.0):
    """Serve app on host:port (0: a free port) in a daemon thread for the with-block; yields the base URL
    ("http://127.0.0.1:PORT"). The server is stopped (gracefully, then forcibly) when the block ends."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, port))
    listener.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="spritediff-serve",
                              daemon=True)
    thread.start()
    try:
        _wait_started(server, thread, startup_s)
        bound = listener.getsockname()
        yield f"http://{'[' + bound[0] + ']' if ':' in bound[0] else bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        listener.close()


def _wait_started(server, thread: threading.Thread, startup_s: float) -> None:
    deadline = time.monotonic() + startup_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the playground server did not start")
        time.sleep(0.02)
