"""SIGINT and SIGTERM during `spritediff sample`: --out is left as it was and no staging folder remains."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def start_sampling(model: Path, out: Path) -> subprocess.Popen:
    """A CLI process that samples for many seconds; SIGINT gets Python's default handler even if the test runner
    was started with SIGINT ignored (as background jobs are)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "spritediff", "sample", "--model", str(model), "--sampler", "ddpm", "--n", "4000",
               "--batch-size", "100", "--out", str(out)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_stage(folder: Path, process: subprocess.Popen, timeout: float = 60) -> Path:
    """The hidden staging folder the process made under folder, once it holds samples.npy (sampling has begun)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stages = [p for p in folder.rglob(".spritediff-stage-*") if (p / "samples.npy").exists()]
        if stages:
            return stages[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.kill()
    raise AssertionError("sampling never started")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
@pytest.mark.parametrize("existing", [False, True])
def test_a_signal_leaves_out_as_it_was(tiny_model_path, tmp_path, signum, code, word, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "run.json").write_text('{"earlier": true}\n')
        (out / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    process = start_sampling(tiny_model_path, out)
    stage = wait_for_stage(tmp_path, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code and word in err and "Traceback" not in err, err
    assert not stage.exists() and snapshot(tmp_path) == before  # no staging folder; out untouched or absent


def test_a_signal_whose_exception_was_lost_still_blocks_the_commit(tmp_path, monkeypatch):
    """A library may swallow the exception a signal handler raises (a C extension's import can); the signal is
    also remembered, and staged_output refuses to move anything into --out after it."""
    from spritediff.interrupts import STOP, Terminated
    from spritediff.outputs import staged_output

    monkeypatch.setitem(STOP, "signal", signal.SIGTERM)
    with pytest.raises(Terminated):
        with staged_output(tmp_path / "out") as stage:
            (stage / "samples.npy").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []
