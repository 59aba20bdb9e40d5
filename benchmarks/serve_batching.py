"""Dynamic batching in `spritediff serve`: throughput and latency with 1, 8 and 32 concurrent clients, on and off.

    python benchmarks/serve_batching.py --out docs/eval/serve_batching.json

For each mode (batching on: up to --max-active requests share every model call; off: `serve --no-batching`, one
request at a time) it starts `spritediff serve` as a separate process on a free loopback port, warms it up, and
for each client count C starts C client threads that each send --requests sample requests (DDIM-20, n=16 by
default, no streamed frames) one after another. Per level: throughput (requests and sprites per second, over the
wall time from the first request to the last answer), and p50 / p95 latency (request sent to its last event).
Prints a markdown table with the speed-up of batching at each C, and writes the JSON record (machine, torch,
threads, date, settings, every level). Goal of issue 13: >= 3x the throughput at 32 clients.

Every request goes to 127.0.0.1 only, and the loops are bounded (C x --requests requests per level).
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from spritediff.serve.client import PlaygroundClient


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model file (default: the shipped model)")
    p.add_argument("--clients", default="1,8,32", help="concurrent client counts (default 1,8,32)")
    p.add_argument("--requests", type=int, default=4, help="requests per client per level (default 4)")
    p.add_argument("--sampler", default="ddim", help="sampler of every request (default ddim)")
    p.add_argument("--steps", type=int, default=20, help="steps of every request (default 20)")
    p.add_argument("--n", type=int, default=16, help="sprites per request (default 16)")
    p.add_argument("--context", default="random", help="context of every request (default random: guided)")
    p.add_argument("--warmup", type=int, default=2, help="requests before measuring, per mode (default 2)")
    p.add_argument("--max-active", type=int, default=32, help="serve --max-active with batching on (default 32)")
    p.add_argument("--precision", default="auto", help="serve --precision (default auto)")
    p.add_argument("--device", default="cpu", help="serve --device (default cpu)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the server (default: torch's own choice)")
    p.add_argument("--modes", default="on,off", help="batching modes to run, in order (default on,off)")
    p.add_argument("--out", help="write the JSON record here")
    return p.parse_args(argv)


class Server:
    """`spritediff serve` in a child process on a free loopback port; stopped with SIGTERM."""

    def __init__(self, args, batching: bool, queue: int):
        command = [sys.executable, "-m", "spritediff", "serve", "--port", "0", "--precision", args.precision,
                   "--device", args.device, "--max-active", str(args.max_active), "--queue", str(queue),
                   "--max-n", str(max(args.n, 1))]
        command += ["--model", args.model] if args.model else []
        command += [] if batching else ["--no-batching"]
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()
        if not line.startswith("spritediff serve: http://"):
            self.stop()
            raise SystemExit(f"the server did not start: {line}{self.process.stderr.read()}")
        self.url = line.split()[2].rstrip("/")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def one_request(client: PlaygroundClient, args, seed: int) -> float:
    """Seconds from sending one sample request to its last event; the run must end "done"."""
    start = time.perf_counter()
    events = client.sample(sampler=args.sampler, steps=args.steps, n=args.n, seed=seed, context=args.context,
                           frames=False)
    seconds = time.perf_counter() - start
    if events[-1]["type"] != "done":
        raise SystemExit(f"a request failed: {events[-1]}")
    return seconds


def level(client: PlaygroundClient, args, clients: int) -> dict:
    """clients threads x args.requests requests each; throughput and latency percentiles."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for r in range(args.requests):
            seconds = one_request(client, args, seed=1000 * k + r)
            with lock:
                latencies.append(seconds)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    requests = clients * args.requests
    return {"clients": clients, "requests": requests, "wall_seconds": round(wall, 3),
            "requests_per_second": round(requests / wall, 3), "sprites_per_second": round(requests * args.n / wall, 1),
            "p50_seconds": round(float(np.percentile(latencies, 50)), 4),
            "p95_seconds": round(float(np.percentile(latencies, 95)), 4)}


def run_mode(args, batching: bool, counts: list[int]) -> dict:
    server = Server(args, batching, queue=max(64, max(counts)))
    try:
        client = PlaygroundClient(server.url, timeout=3600)
        for i in range(args.warmup):
            one_request(client, args, seed=10_000 + i)
        levels = [level(client, args, c) for c in counts]
        stats = client.get_json("/api/status")["batching"]
        info = client.get_json("/api/info")
    finally:
        server.stop()
    return {"batching": batching, "levels": levels, "batcher": stats, "precision": info["precision"],
            "device": info["model"]["device"]}


def table(results: dict, counts: list[int]) -> str:
    lines = ["| clients | batching | requests/s | sprites/s | p50 s | p95 s | speed-up |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, c in enumerate(counts):
        off = results.get("off", {}).get("levels", [None] * len(counts))[i]
        for mode in ("on", "off"):
            if mode not in results:
                continue
            row = results[mode]["levels"][i]
            speed = f"{row['requests_per_second'] / off['requests_per_second']:.2f}x" if off and mode == "on" else ""
            lines.append(f"| {c} | {mode} | {row['requests_per_second']} | {row['sprites_per_second']} | "
                         f"{row['p50_seconds']} | {row['p95_seconds']} | {speed} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    started = time.time()
    results = {mode: run_mode(args, mode == "on", counts) for mode in modes}
    print(table(results, counts))
    record = {"command": " ".join(["python", "benchmarks/serve_batching.py", *(argv or sys.argv[1:])]),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results,
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
              "date": datetime.date.today().isoformat(), "seconds": round(time.time() - started, 1)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
