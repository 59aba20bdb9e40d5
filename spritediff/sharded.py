"""Work split across torchrun processes: each rank takes whole batches of the one-process run, rank 0 gathers
the shares in bounded chunks and alone writes --out.

Sample i always draws from noise stream (seed, i), and a rank's model calls see exactly the rows that the
one-process run's calls see (its share is a run of that run's batches), so at fp32 on the CPU the gathered
result is bit-identical to one process however many ranks there are. The shares travel over gloo as CPU
tensors whatever device the ranks sample on, in messages of at most CHUNK_BYTES, so no rank ever holds more
than its own share (which can live in a memory-mapped file) plus one chunk.
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import replace
import numpy as np
import torch

from .distributed import World
from .errors import ReportedElsewhere, SpriteDiffError

CHUNK_BYTES = 8 * 2**20  # bytes per gathered message


def join() -> World:
    """Join torchrun's job over gloo when WORLD_SIZE > 1 (the shares are gathered as CPU tensors), else a job of one."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size == 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return World(dist.get_rank(), dist.get_world_size())


def leave(ranks: World) -> None:
    """Wait for every rank, then leave the group (rank 0 has written --out by then)."""
    import torch.distributed as dist

    if ranks.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shares(n: int, batch_size: int, size: int) -> list[tuple[int, int]]:
    """[lo, hi) of each rank's samples: consecutive whole batches of batch_size (the last may be short), as even as
    whole batches allow, rank 0 first; a rank gets an empty share when there are fewer batches than ranks."""
    batches = math.ceil(n / batch_size)
    bounds = [min(n, math.ceil(batches * r / size) * batch_size) for r in range(size + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def first_failure(ranks: World, error: BaseException | None) -> int:
    """The lowest rank whose checks failed (-1: none failed), agreed by every rank before any starts work."""
    if ranks.size == 1:
        return -1 if error is None else 0
    import torch.distributed as dist

    flag = torch.tensor([ranks.rank if error is not None else ranks.size])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return -1 if int(flag) == ranks.size else int(flag)


def gather_rows(ranks: World, local: np.ndarray, all_shares: list[tuple[int, int]], out: np.ndarray | None) -> None:
    """Rank 0 copies every other rank's rows into out[lo:hi] of that rank's share; the others send `local`, their
    (hi - lo, ...) rows. Rank 0's own rows must already be in out. Rows go in chunks of about CHUNK_BYTES."""
    if ranks.size == 1:
        return
    import torch.distributed as dist

    try:
        if not ranks.is_main:
            for a, b in _chunks(len(local), local[0].nbytes if len(local) else 1):
                dist.send(torch.from_numpy(np.ascontiguousarray(local[a:b])), dst=0)
            return
        for rank, (lo, hi) in enumerate(all_shares[1:], start=1):
            for a, b in _chunks(hi - lo, out[0].nbytes):
                buffer = torch.empty((b - a, *out.shape[1:]), dtype=torch.from_numpy(out[:0]).dtype)
                dist.recv(buffer, src=rank)
                out[lo + a:lo + b] = buffer.numpy()
    except RuntimeError as err:  # gloo's "connection closed by peer" and the like
        raise lost_rank(err) from None


def gather_values(ranks: World, values: list[float]) -> list[list[float]]:
    """Every rank's `values` (the same length on each), in rank order, on every rank."""
    if ranks.size == 1:
        return [list(values)]
    import torch.distributed as dist

    mine = torch.tensor(values, dtype=torch.float64)
    every = [torch.empty_like(mine) for _ in range(ranks.size)]
    try:
        dist.all_gather(every, mine)
    except RuntimeError as err:
        raise lost_rank(err) from None
    return [t.tolist() for t in every]


def lost_rank(err: BaseException) -> SpriteDiffError:
    """The one-line error of a rank that lost its peers mid-run (another rank failed or was killed)."""
    reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
    return SpriteDiffError(f"another process of this torchrun job stopped before sending its share ({reason}); "
                           f"nothing was written")


def _chunks(rows: int, row_bytes: int):
    """[a, b) row ranges of at most CHUNK_BYTES each (at least one row) covering 0..rows."""
    step = max(1, CHUNK_BYTES // max(1, row_bytes))
    return [(a, min(rows, a + step)) for a in range(0, rows, step)]


@contextmanager
def checked_together(ranks: World):
    """Run a block of argument and file checks on every rank, then agree: if any rank's checks raised a
    SpriteDiffError, the lowest such rank raises it (one line in all) and every other rank stops quietly, so no
    rank starts work after a bad argument and the refusal is printed once."""
    error = None
    try:
        yield
    except SpriteDiffError as err:
        error = err
    failed = first_failure(ranks, error)
    if failed == ranks.rank:
        raise error
    if failed >= 0:
        raise ReportedElsewhere(f"rank {failed} refused the arguments")


def scratch_rows(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A zeroed array for a rank's share, memory-mapped from an unnamed temporary file: bounded memory at any n."""
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(tempfile.TemporaryFile(), dtype=dtype, mode="w+", shape=shape)


def sample_across(ranks: World, model, plan, images: np.ndarray | None, bar=None):
    """Run a SamplePlan of the whole job with its ranks: each samples its share (whole batches of the one-process
    run, per-sample streams unchanged) and rank 0 gathers every share into images (n, H, W, C) uint8.

    Returns (result, seconds): on rank 0 the SampleResult of the whole run (its frames: those of the first
    plan.frames samples, whichever ranks drew them; its settings: the whole plan's), elsewhere None; seconds is
    every rank's sampling time, in rank order."""
    from .engine import Engine, SampleResult

    all_shares = shares(plan.n, plan.batch_size, ranks.size)
    lo, hi = all_shares[ranks.rank]
    row = (model.net.height, model.net.height, model.net.in_channels)
    local = images[lo:hi] if ranks.is_main else scratch_rows((hi - lo, *row), np.uint8)
    result = None
    if hi > lo:
        share = replace(plan, start=lo, n=hi - lo, frames=max(0, min(hi, plan.frames) - lo))
        result = Engine(model, plan.device, plan.fast, plan.precision).sample(share, local, bar=bar)
    gather_rows(ranks, local, all_shares, images)
    frames = gather_frames(ranks, result.frames if result else [], all_shares, plan.frames, row)
    seconds = [values[0] for values in gather_values(ranks, [result.seconds if result else 0.0])]
    if not ranks.is_main:
        return None, seconds
    return SampleResult(images, frames, result.timesteps, result.nfe, max(seconds), plan.settings()), seconds


def gather_frames(ranks: World, frames: list, all_shares: list[tuple[int, int]], kept: int,
                  row: tuple[int, ...]) -> list:
    """Rank 0's list of (x_t, x0_hat) per step, each (kept, *row) uint8, assembled from the frames each rank kept
    of its share's first samples (a list of (x_t, x0_hat) per step, each (f, *row)); [] elsewhere."""
    if ranks.size == 1 or kept == 0:
        return frames
    frame_shares = [(min(lo, kept), min(hi, kept)) for lo, hi in all_shares]
    mine = frame_shares[ranks.rank][1] - frame_shares[ranks.rank][0]
    local = np.stack([np.stack(pair, 1) for pair in frames], 1) if mine else np.zeros((0,), np.uint8)
    if not ranks.is_main:  # (f, steps, 2, *row) rows; a rank without frames sends nothing
        gather_rows(ranks, local, frame_shares, None)
        return []
    out = np.empty((kept, len(frames), 2, *row), np.uint8)  # rank 0 always holds frames: its share starts at 0
    out[:mine] = local
    gather_rows(ranks, local, frame_shares, out)
    return [(out[:, s, 0], out[:, s, 1]) for s in range(len(frames))]
