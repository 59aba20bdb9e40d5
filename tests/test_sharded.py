"""Work split across torchrun processes: shares of whole batches, and rows gathered to rank 0 over gloo."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch.multiprocessing as mp

from spritediff import sharded


@pytest.mark.parametrize("n,batch,size", [(48, 8, 2), (48, 8, 4), (50, 8, 3), (5, 8, 2), (1, 1, 3), (1000, 128, 7)])
def test_shares_are_whole_batches_covering_every_sample_once(n, batch, size):
    shares = sharded.shares(n, batch, size)
    assert len(shares) == size and shares[0][0] == 0 and shares[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))  # consecutive, no gap, no overlap
    assert all(lo % batch == 0 for lo, hi in shares if hi > lo)  # each starts on a one-process batch boundary
    sizes = [-(-(hi - lo) // batch) for lo, hi in shares]  # batches per rank
    assert max(sizes) - min(sizes) <= 1 and shares[0][1] > 0  # as even as whole batches allow, rank 0 never idle


def test_chunks_bound_each_message():
    sharded_chunks = sharded._chunks(10_000, 3 * 2**20)  # 3 MB rows: two per 8 MB message
    assert sharded_chunks[0] == (0, 2) and sharded_chunks[-1][1] == 10_000
    assert sharded._chunks(5, 1) == [(0, 5)] and sharded._chunks(0, 10) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, size: int, port: int, n: int, result: str, chunk_bytes: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    sharded.CHUNK_BYTES = chunk_bytes
    ranks = sharded.join()
    everything = np.arange(n * 12, dtype=np.uint8).reshape(n, 2, 2, 3)  # row i is what rank (i's owner) computes
    shares = sharded.shares(n, 4, size)
    lo, hi = shares[ranks.rank]
    out = np.zeros_like(everything) if ranks.is_main else None
    if ranks.is_main:
        out[lo:hi] = everything[lo:hi]
    sharded.gather_rows(ranks, everything[lo:hi].copy(), shares, out)
    times = sharded.gather_values(ranks, [float(ranks.rank), 2.0 * ranks.rank])
    assert times == [[float(r), 2.0 * r] for r in range(size)]
    if ranks.is_main:
        np.save(result, out)
    sharded.leave(ranks)


@pytest.mark.parametrize("size,chunk_bytes", [(2, 1), (3, 100)])
def test_rank_zero_gathers_every_share_in_chunks(tmp_path, size, chunk_bytes):
    n, result = 37, str(tmp_path / "out.npy")
    mp.start_processes(_gather_worker, args=(size, _free_port(), n, result, chunk_bytes), nprocs=size,
                       start_method="spawn")
    assert np.array_equal(np.load(result), np.arange(n * 12, dtype=np.uint8).reshape(n, 2, 2, 3))
