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
import numpy as np
import torch

from .distributed import World
from .errors import SpriteDiffError

CHUNK_BYTES = 8 * 2**20  # bytes per gathered message


def launched_rank() -> int:
    """RANK as torchrun sets it (0 outside torchrun), read without joining any group: for messages before setup."""
    return int(os.environ.get("RANK", "0") or 0)


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
