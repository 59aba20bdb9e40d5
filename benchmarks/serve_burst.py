"""A burst on the playground: 48 clients sample at once (DDIM-20, n 4, frames streamed), then every result is
downloaded again once the burst is over, and the server's memory is read before and after.

    python benchmarks/serve_burst.py [--model default] [--clients 48]

Prints the burst's wall time, how many results are still downloadable, the result store's count and bytes
(GET /api/status) and the process's resident memory (VmRSS) before and after, and its peak. Linux only (/proc).
Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
import resource
import threading
import time

import spritediff
from spritediff.serve.app import create_app
from spritediff.serve.client import PlaygroundClient
from spritediff.serve.config import ServeConfig
from spritediff.serve.server import run_in_thread


def rss_mb() -> float:
    """This process's resident memory in MB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def burst(client: PlaygroundClient, clients: int) -> tuple[list[dict], float]:
    """Every client's last event and the burst's wall seconds."""
    done: list[dict] = [{}] * clients

    def ask(i: int) -> None:
        done[i] = client.sample(sampler="ddim", steps=20, n=4, seed=i)[-1]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model file (default: the shipped model)")
    parser.add_argument("--clients", type=int, default=48)
    args = parser.parse_args()
    model = spritediff.load(args.model)
    with run_in_thread(create_app(model, "cpu", ServeConfig())) as url:
        client = PlaygroundClient(url)
        client.sample(sampler="ddim", steps=20, n=4)  # warm-up
        before = rss_mb()
        done, wall = burst(client, args.clients)
        kept = sum(client.download_npy(event["id"]).shape[0] == 4 for event in done if event.get("type") == "done")
        store = client.get_json("/api/status")["results"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.clients} clients, DDIM-20, n 4: {wall:.1f} s wall; {kept}/{args.clients} results downloadable "
          f"after the burst; store {store['results']} results, {store['bytes'] / 2**20:.1f} MB of "
          f"{store['budget_bytes'] / 2**20:.0f} MB; RSS {before:.0f} -> {rss_mb():.0f} MB (peak {peak:.0f} MB)")


if __name__ == "__main__":
    main()
