"""ServeConfig: the caps on every request field and the batching knobs of `spritediff serve`, in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass


BATCH_ROWS = {"cpu": 256, "cuda": 4096}  # default net rows per merged call: on the CPU the net's cost per row does
# not fall beyond a few dozen rows (larger calls only amortise per-call overhead), a GPU keeps gaining far longer


@dataclass(frozen=True)
class ServeConfig:
    """Limits (checked server-side on every request) and the dynamic batching knobs.

    Batching: at most max_active requests sample at once, one thread each; their model calls are merged into
    one call of at most max_batch_rows net rows (a guided sample counts 2 rows; None: BATCH_ROWS of the device),
    waiting at most batch_wait_ms for every running request to submit its next call. At most `queue` more
    requests wait for a slot; beyond that the server answers 503 "busy". batching=False is the
    one-request-at-a-time baseline: max_active 1.
    """

    max_active: int = 32
    queue: int = 64
    max_batch_rows: int | None = None
    batch_wait_ms: float = 10.0
    batching: bool = True
    precision: str = "auto"  # fp32, bf16 or auto, as spritediff sample's --precision
    max_n: int = 64  # sprites per sample request
    max_steps: int = 500  # model calls per sample (further capped by the model's T)
    max_race_n: int = 8
    max_edit_n: int = 8
    max_edit_steps: int = 100
    max_resample: int = 10
    max_interp_frames: int = 12
    max_guidance: float = 20.0
    max_weight: float = 10.0  # |context weight| in a mix
    max_upload_bytes: int = 64 * 1024  # one uploaded PNG, after base64 decoding
    max_body_bytes: int = 256 * 1024  # one JSON request body
    frame_interval_s: float = 0.05  # a running request streams at most one frame per interval
    results_keep_s: float = 600.0  # every finished result stays downloadable this long after it was shown
    results_budget_mb: float = 512.0  # memory for kept results; a request that might not fit is refused (503)

    @property
    def active_limit(self) -> int:
        """Requests that may sample at once: max_active, or 1 with batching off."""
        return self.max_active if self.batching else 1

    def batch_rows(self, device_type: str) -> int:
        """max_batch_rows, or the device's default."""
        return self.max_batch_rows or BATCH_ROWS.get(device_type, BATCH_ROWS["cpu"])

    def public(self) -> dict:
        """The limits as the page sees them (GET /api/info)."""
        return {key: value for key, value in asdict(self).items() if key.startswith("max_")} | {
            "queue": self.queue, "batching": self.batching, "active_limit": self.active_limit}
