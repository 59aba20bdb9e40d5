"""Serving like an inference server: merged model calls (dynamic batching), a bounded queue with a "busy" answer, a
client that goes away frees its slot, a failure is one line. Over real HTTP where a client is involved."""
from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time

import numpy as np
import pytest
import torch
from conftest import tiny_model

import spritediff
from spritediff.checkpoint import SpriteModel
from spritediff.serve.app import create_app
from spritediff.serve.batcher import BatchedNet, ModelBatcher
from spritediff.serve.client import APIError, PlaygroundClient
from spritediff.serve.config import ServeConfig
from spritediff.serve.images import data_url
from spritediff.serve.jobs import Busy, Job, Scheduler
from spritediff.serve.server import run_in_thread


class SlowNet(torch.nn.Module):
    """A net that takes `delay` seconds per call (on top of the tiny net's time), to hold slots in tests."""

    def __init__(self, net: torch.nn.Module, delay: float):
        super().__init__()
        self.inner, self.delay = net, delay
        self.n_cfeat, self.in_channels, self.height = net.n_cfeat, net.in_channels, net.height

    def forward(self, x, t, c=None):
        time.sleep(self.delay)
        return self.inner(x, t, c)


class BrokenNet(SlowNet):
    def forward(self, x, t, c=None):
        raise RuntimeError("device on fire")


def model_with(net_class, *args) -> SpriteModel:
    model = tiny_model()
    return SpriteModel(net_class(model.net, *args), model.schedule, model.classes, model.info)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_concurrent_calls_are_merged_into_one_model_call_with_the_same_rows():
    net = tiny_model().net
    batcher = ModelBatcher(net, torch.device("cpu"), max_rows=64, wait_s=5.0)
    inputs = [(torch.randn(k, 3, 16, 16), torch.rand(k), torch.rand(k, 5)) for k in (1, 3, 2)]
    outputs = [None] * 3

    def call(i):
        with batcher.participant():
            outputs[i] = batcher(*inputs[i])

    with batcher.participant():  # hold the lockstep until all three have submitted
        threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(batcher._pending) == 3)
    for thread in threads:
        thread.join()
    batcher.close()
    assert batcher.stats.model_calls == 1 and batcher.stats.max_rows == 6
    for (x, t, c), out in zip(inputs, outputs):
        assert torch.allclose(out, net(x, t, c), atol=1e-5)


def test_max_rows_splits_a_round_and_a_lone_call_never_waits():
    batcher = ModelBatcher(tiny_model().net, torch.device("cpu"), max_rows=4, wait_s=5.0)
    start = time.monotonic()
    batcher(torch.randn(2, 3, 16, 16), torch.rand(2), torch.rand(2, 5))  # no participant: runs at once
    assert time.monotonic() - start < 2.0
    calls = [(torch.randn(3, 3, 16, 16), torch.rand(3), torch.rand(3, 5)) for _ in range(2)]
    threads = [threading.Thread(target=batcher, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert batcher.stats.max_rows <= 4 and batcher.stats.model_calls == 3


def test_batched_net_stands_in_for_the_net_inside_the_denoiser():
    model = tiny_model()
    batcher = ModelBatcher(model.net, torch.device("cpu"))
    proxy = BatchedNet(batcher, model.net)
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.3)
    assert torch.allclose(proxy(x, t), model.net(x, t, None), atol=1e-6)
    assert proxy.to("cpu").eval() is proxy and proxy.n_cfeat == 5
    batcher.close()


def test_scheduler_admits_all_or_none_and_cancels_waiting_jobs():
    loop = asyncio.new_event_loop()
    queue = asyncio.Queue()
    release = threading.Event()
    scheduler = Scheduler(active=1, queue=1)
    make = lambda: Job(lambda job: (release.wait(5), {"type": "done"})[1], queue, loop)  # noqa: E731
    running, waiting = make(), make()
    scheduler.submit([running])
    scheduler.submit([waiting])
    with pytest.raises(Busy):
        scheduler.submit([make()])
    assert scheduler.status()["running"] == 1 and scheduler.status()["waiting"] == 1
    scheduler.cancel(waiting)
    assert scheduler.status()["waiting"] == 0 and waiting.finished.is_set()
    with pytest.raises(Busy):
        scheduler.submit([make(), make()])  # two would not fit: neither is admitted
    release.set()
    wait_until(lambda: scheduler.status()["running"] == 0)
    loop.close()


def test_concurrent_requests_share_model_calls_and_keep_their_own_sprites():
    model = tiny_model()
    asks = [dict(sampler="ddim", steps=20, n=3, seed=1, context="hero"),
            dict(sampler="ddim", steps=20, n=5, seed=2, context="random", options={"eta": 1.0}),
            dict(sampler="ddpm", steps=30, n=2, seed=3),
            dict(sampler="dpmpp-2m", steps=10, n=4, seed=4, guidance=2.0, context="food=1,spell=0.5"),
            dict(sampler="heun", steps=9, n=1, seed=5),
            dict(sampler="unipc", steps=12, n=6, seed=6, context="side-facing")]
    with run_in_thread(create_app(model, "cpu", ServeConfig(precision="fp32", batch_wait_ms=50))) as url:
        client = PlaygroundClient(url)
        results = [None] * len(asks)

        def ask(i):
            results[i] = client.sample(**asks[i], frames=False)[-1]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = client.get_json("/api/status")["batching"]
        for ask_fields, done in zip(asks, results):
            expected = spritediff.sample(model, ask_fields["sampler"], ask_fields["steps"], ask_fields["n"],
                                         ask_fields.get("context"), ask_fields.get("guidance", 0.5), ask_fields["seed"],
                                         frames=False, precision="fp32", **ask_fields.get("options", {}))
            got = client.download_npy(done["id"])
            assert np.abs(got.astype(int) - expected.images.astype(int)).max() <= 1
            assert done["nfe"] == expected.nfe
    assert stats["requests_per_call"] > 1.5  # calls of different samplers and settings were merged
    assert stats["max_rows"] > 2 * 6  # more rows than the largest request's (guided: 2 rows per sprite)


def _open_stream(url: str, payload: dict):
    """A sample request whose answer is read line by line; returns (connection, response)."""
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/api/sample", json.dumps(payload), {"Content-Type": "application/json"})
    return connection, connection.getresponse()


def _read_until(response, kind: str) -> dict:
    for raw in response:
        if raw.strip() and json.loads(raw)["type"] == kind:
            return json.loads(raw)
    raise AssertionError(f"no {kind} event")


def test_a_full_queue_answers_busy_and_a_client_that_goes_away_frees_its_slot():
    model = model_with(SlowNet, 0.02)
    config = ServeConfig(precision="fp32", max_active=1, queue=1)
    with run_in_thread(create_app(model, "cpu", config)) as url:
        client = PlaygroundClient(url)
        first, first_answer = _open_stream(url, {"sampler": "ddpm", "steps": 500, "n": 1})
        _read_until(first_answer, "frame")
        second, second_answer = _open_stream(url, {"sampler": "ddim", "steps": 5, "n": 1, "seed": 9})
        assert _read_until(second_answer, "queued")["ahead"] == 0
        with pytest.raises(APIError) as caught:
            client.sample(n=1, steps=2)
        assert caught.value.status == 503 and caught.value.message.startswith("server busy")
        assert "\n" not in caught.value.message
        assert client.request("POST", "/api/sample", b"{}", {"Content-Type": "application/json"})[1]["retry-after"]
        first.close()  # the DDPM client goes away mid-run: its slot goes to the waiting request
        done = _read_until(second_answer, "done")
        assert done["nfe"] == 5
        second.close()
        wait_until(lambda: client.get_json("/api/status")["running"] == 0)
        calls = client.get_json("/api/status")["batching"]["model_calls"]
        time.sleep(0.3)
        assert client.get_json("/api/status")["batching"]["model_calls"] == calls  # nothing runs for those who left
        assert client.sample(n=1, steps=2)[-1]["type"] == "done"


def test_a_short_request_is_not_held_up_by_a_long_ddpm_run():
    model = model_with(SlowNet, 0.01)
    with run_in_thread(create_app(model, "cpu", ServeConfig(precision="fp32"))) as url:
        client = PlaygroundClient(url)
        long_run, long_answer = _open_stream(url, {"sampler": "ddpm", "steps": 500, "n": 2})
        _read_until(long_answer, "frame")
        done = client.sample(sampler="ddim", steps=10, n=2)[-1]
        assert done["nfe"] == 10 and done["seconds"] < 3  # 10 shared calls, not behind DDPM's 500
        assert client.get_json("/api/status")["running"] == 1  # the DDPM run is still going
        long_run.close()
        wait_until(lambda: client.get_json("/api/status")["running"] == 0)


def test_a_waiting_client_that_goes_away_leaves_the_queue():
    model = model_with(SlowNet, 0.02)
    with run_in_thread(create_app(model, "cpu", ServeConfig(precision="fp32", max_active=1, queue=4))) as url:
        client = PlaygroundClient(url)
        first, first_answer = _open_stream(url, {"sampler": "ddpm", "steps": 500, "n": 1})
        _read_until(first_answer, "running")
        waiting, waiting_answer = _open_stream(url, {"n": 1})
        _read_until(waiting_answer, "queued")
        assert client.get_json("/api/status")["waiting"] == 1
        waiting.close()
        wait_until(lambda: client.get_json("/api/status")["waiting"] == 0)
        first.close()
        wait_until(lambda: client.get_json("/api/status")["running"] == 0)


def test_a_failing_model_is_a_one_line_error_never_a_traceback():
    with run_in_thread(create_app(model_with(BrokenNet, 0.0), "cpu", ServeConfig(precision="fp32"))) as url:
        client = PlaygroundClient(url)
        events = client.sample(n=1, steps=2)
        assert events[-1]["type"] == "error" and events[-1]["message"].startswith("internal error")
        assert "device on fire" not in json.dumps(events)
        with pytest.raises(APIError) as caught:
            client.edit(op="reconstruct", image=data_url(np.zeros((16, 16, 3), np.uint8)), steps=2)
        assert caught.value.status == 500 and "Traceback" not in caught.value.message
        assert client.get_json("/api/status")["running"] == 0


def test_a_non_finite_sample_is_a_user_error():
    model = tiny_model()
    with run_in_thread(create_app(model, "cpu", ServeConfig(precision="fp32", max_weight=1e30))) as url:
        events = PlaygroundClient(url).sample(n=2, steps=3, context="hero=1e30", guidance=20)
    assert events[-1]["type"] == "error" and "not finite" in events[-1]["message"]


def test_batching_off_runs_one_request_at_a_time():
    model = model_with(SlowNet, 0.01)
    with run_in_thread(create_app(model, "cpu", ServeConfig(precision="fp32", batching=False))) as url:
        client = PlaygroundClient(url)
        assert client.get_json("/api/info")["limits"]["active_limit"] == 1
        threads = [threading.Thread(target=client.sample, kwargs=dict(n=2, steps=10, seed=i)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = client.get_json("/api/status")["batching"]
    assert stats["requests_per_call"] == 1.0 and stats["model_calls"] == 30


@pytest.mark.slow
def test_a_burst_of_48_clients_leaves_every_result_downloadable():
    """48 clients at once (DDIM-20, n 4, frames on): every stream ends done, and afterwards every one of the 48
    results can still be downloaded (the store keeps each for results_keep_s, not the last few)."""
    model = tiny_model()
    with run_in_thread(create_app(model, "cpu", ServeConfig(precision="fp32"))) as url:
        client = PlaygroundClient(url)
        done = [None] * 48

        def ask(i):
            done[i] = client.sample(sampler="ddim", steps=20, n=4, seed=i)[-1]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(48)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(event["type"] == "done" for event in done)
        for i, event in enumerate(done):
            assert client.download_npy(event["id"]).shape == (4, 16, 16, 3)
            assert client.download(event["id"], "denoise.gif")[:6] == b"GIF89a"
        kept = client.get_json("/api/status")["results"]
    assert kept["results"] == 48 and 0 < kept["bytes"] <= kept["budget_bytes"]


def test_results_expire_after_keep_s_and_not_before():
    from spritediff.serve.results import ResultStore, result_bytes

    now = [0.0]
    store = ResultStore(keep_s=600, budget_bytes=10**9, clock=lambda: now[0])
    result = spritediff.sample(tiny_model(), "ddim", steps=3, n=2)
    first = store.put(result, "a")
    now[0] = 300.0
    second = store.put(result, "b")
    now[0] = 599.9
    assert store.get(first)[1] == "a" and store.get(second)[1] == "b"
    now[0] = 600.0
    assert store.get(first) is None and store.get(second)[1] == "b"
    assert store.usage()["bytes"] == result_bytes(result) > result.images.nbytes  # frames count too
    now[0] = 900.0
    assert store.get(second) is None and store.usage() == {"results": 0, "bytes": 0, "budget_bytes": 10**9,
                                                           "keep_s": 600}


@pytest.mark.slow
def test_the_largest_request_fits_its_worst_case_and_a_full_store_refuses_before_any_work():
    from spritediff.serve.results import worst_result_bytes

    model, config = tiny_model(), ServeConfig(precision="fp32")
    worst = worst_result_bytes(config, 16 * 16 * 3)
    with run_in_thread(create_app(model, "cpu", config)) as url:
        client = PlaygroundClient(url)
        client.sample(sampler="ddim", steps=config.max_steps, n=config.max_n)
        assert 0.5 * worst < client.get_json("/api/status")["results"]["bytes"] <= worst
    tight = ServeConfig(precision="fp32", results_budget_mb=(worst + 100) / 2**20)  # one worst case, no more
    with run_in_thread(create_app(model, "cpu", tight)) as url:
        client = PlaygroundClient(url)
        first = client.sample(sampler="ddim", steps=5, n=2)[-1]
        with pytest.raises(APIError) as caught:  # the first result (15 KB) plus one worst case exceed the budget
            client.sample(sampler="ddim", steps=5, n=2)
        assert caught.value.status == 503 and "fill the" in caught.value.message and "\n" not in caught.value.message
        assert client.get_json("/api/status")["batching"]["model_calls"] == 5  # nothing ran for the refused one
        assert client.download_npy(first["id"]).shape == (2, 16, 16, 3)
