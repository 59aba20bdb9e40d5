"""A small HTTP client of the playground API on the standard library (scripts, tests, the batching benchmark).

    client = PlaygroundClient("http://127.0.0.1:7860")
    events = client.sample(sampler="ddim", steps=20, n=16, seed=0)   # every NDJSON event, the last is "done"
    images = client.download_npy(events[-1]["id"])                    # (16, 16, 16, 3) uint8
"""
from __future__ import annotations

import http.client
import io
import json
from urllib.parse import urlsplit

import numpy as np


class APIError(Exception):
    """An answer with a 4xx or 5xx status: .status and the server's one-line .message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class PlaygroundClient:
    """Talks to one server; each call opens its own connection (so a client may be shared by threads)."""

    def __init__(self, base_url: str, timeout: float = 300.0):
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body bytes) of any request."""
        connection = self.connection()
        try:
            connection.request(method, path, body, headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def get_json(self, path: str) -> dict:
        status, _, body = self.request("GET", path)
        return _checked(status, body)

    def post_json(self, path: str, payload: dict) -> dict:
        status, _, body = self.request("POST", path, json.dumps(payload).encode(),
                                       {"Content-Type": "application/json"})
        return _checked(status, body)

    def stream(self, path: str, payload: dict, on_event=None) -> list[dict]:
        """POST payload and read the NDJSON answer to its end; every event, in order (on_event sees each first)."""
        connection = self.connection()
        try:
            connection.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                _checked(response.status, response.read())
            events = []
            for raw in response:
                if raw.strip():
                    events.append(json.loads(raw))
                    if on_event is not None:
                        on_event(events[-1])
            return events
        finally:
            connection.close()

    def sample(self, **fields) -> list[dict]:
        return self.stream("/api/sample", fields)

    def race(self, **fields) -> list[dict]:
        return self.stream("/api/race", fields)

    def edit(self, **fields) -> dict:
        return self.post_json("/api/edit", fields)

    def download(self, result_id: str, kind: str) -> bytes:
        status, _, body = self.request("GET", f"/api/results/{result_id}/{kind}")
        if status != 200:
            _checked(status, body)
        return body

    def download_npy(self, result_id: str) -> np.ndarray:
        return np.load(io.BytesIO(self.download(result_id, "samples.npy")), allow_pickle=False)


def _checked(status: int, body: bytes) -> dict:
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {"error": body[:200].decode("utf-8", "replace")}
    if status >= 400:
        raise APIError(status, answer.get("error", "") if isinstance(answer, dict) else str(answer))
    return answer
