"""sample and eval under torchrun (gloo, two CPU processes): the same bytes as one process, a bad argument refused
once before any work, a killed rank leaving --out as it was, and every option reachable through torchrun's parser."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_sprite_images

from spritediff.cli import build_parser

pytestmark = pytest.mark.slow

SHARDED = ("sample", "eval", "invert")  # the commands that split their work across torchrun's processes


def torchrun(args, tag: str = "", **kwargs) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 -m spritediff ARGS`, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPRITEDIFF_TEST_TAG": tag}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "spritediff", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def spritediff_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("spritediff:")]


def test_every_option_of_the_sharded_commands_passes_torchrun_s_parser():
    """torchrun's argparse reads any abbreviation of its own options (--n could be --nnodes or --nproc-per-node)
    before the module's arguments: each option needs one spelling it leaves alone, as -n for --n."""
    from torch.distributed.run import get_args_parser

    launcher = get_args_parser()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in SHARDED:
        for action in commands[name]._actions:
            if not action.option_strings or action.dest == "help":
                continue
            passing = []
            for option in action.option_strings:
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        parsed = launcher.parse_args(["--standalone", "-m", "spritediff", name, option, "1"])
                except SystemExit:
                    continue
                passing.append(parsed.training_script_args == [name, option, "1"])
            assert any(passing), (name, action.option_strings)


def test_two_processes_sample_the_same_bytes_as_one(tiny_model_path, tmp_path):
    args = ["sample", "--model", tiny_model_path, "-n", 44, "--batch-size", 8, "--sampler", "ddpm", "--steps", 6,
            "--context", "random", "--guidance", 1, "--gif-n", 30, "--precision", "fp32", "--seed", 5]
    from spritediff.cli import main

    assert main([str(a) for a in args] + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun(args + ["--out", tmp_path / "two"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "44 samples" in done.stdout and "2 processes" in done.stdout and done.stdout.count("samples,") == 1
    one, two = np.load(tmp_path / "one" / "samples.npy"), np.load(tmp_path / "two" / "samples.npy")
    assert one.shape == (44, 16, 16, 3) and np.array_equal(one, two)  # 6 batches of 8 (the last 4): 3 per rank
    for name in ("grid.png", "denoise.gif"):  # the GIF's 30 sprites span both ranks' shares (rank 0 has 24)
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert record["world_size"] == 2 and len(record["seconds_per_rank"]) == 2 and record["seconds_total"] > 0
    assert record["gif_n"] == 30 and record["n"] == 44


def test_two_processes_sample_a_distilled_student_as_one_does(tmp_path):
    """A student's own sampler, grid and baked guidance resolve alike on every rank: the same bytes as one process."""
    import spritediff
    from conftest import tiny_model
    from spritediff.student import StudentSchedule

    student = tiny_model()
    student.prediction_type, student.class_mix = "v", (0.2, 0.2, 0.2, 0.2, 0.2)
    student.student = StudentSchedule((500, 250, 0), 0.5)
    spritediff.save_model(student, tmp_path / "student.safetensors")
    args = ["sample", "--model", tmp_path / "student.safetensors", "-n", 16, "--batch-size", 8, "--precision", "fp32"]
    from spritediff.cli import main

    assert main([str(a) for a in args] + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun(args + ["--out", tmp_path / "two"])
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = np.load(tmp_path / "one" / "samples.npy"), np.load(tmp_path / "two" / "samples.npy")
    assert one.shape == (16, 16, 16, 3) and np.array_equal(one, two)
    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert (record["world_size"], record["nfe"], record["student"]["calls"]) == (2, 2, 2)
    assert record["timesteps"] == [500, 250, 0] and record["guidance"] == 0.5


def test_a_bad_argument_is_refused_once_before_any_work(tiny_model_path, tmp_path):
    for bad in (["--steps", 0], ["--context", "villain"]):
        done = torchrun(["sample", "--model", tiny_model_path, "-n", 8, "--out", tmp_path / "out", *bad])
        lines = spritediff_lines(done.stderr)
        assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("spritediff: error:"), done.stderr
        assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def _pid_of_rank(rank: int, tag: str) -> int | None:
    """The pid of the torchrun worker of this rank whose environment carries the test's tag."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SPRITEDIFF_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env \
                and b"LOCAL_RANK=" + str(rank).encode() in env:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_ends_the_run_and_leaves_out_as_it_was(tiny_model_path, tmp_path):
    out, tag = tmp_path / "out", uuid.uuid4().hex
    (out).mkdir()
    (out / "keep.txt").write_text("mine")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "spritediff", "sample", "--model", str(tiny_model_path), "-n", "4000", "--batch-size", "50",
               "--sampler", "ddpm", "--steps", "500", "--precision", "fp32", "--out", str(out)]
    job = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1", "SPRITEDIFF_TEST_TAG": tag},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(out.glob(".spritediff-stage-*")) and time.time() < deadline:  # rank 0 is sampling
            time.sleep(0.2)
        pid = _pid_of_rank(1, tag)
        assert pid is not None and list(out.glob(".spritediff-stage-*"))
        os.kill(pid, signal.SIGKILL)
        _, stderr = job.communicate(timeout=180)
    finally:
        job.kill()
    assert job.returncode != 0
    lines = spritediff_lines(stderr)
    assert len(lines) == 1 and "--out left as it was" in lines[0] or "nothing was written" in lines[0], stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def sprites_npy(tmp_path_factory):
    """40 random 16x16 sprites on black (a stand-in for real data: the numbers are compared, not judged)."""
    path = tmp_path_factory.mktemp("data") / "sprites.npy"
    np.save(path, fake_sprite_images(40, seed=1))
    return path


def test_two_processes_evaluate_the_same_numbers_as_one(tiny_model_path, sprites_npy, tmp_path):
    from spritediff.cli import main

    args = ["eval", "--model", tiny_model_path, "--data", sprites_npy, "--samplers", "ddim:2,ddpm:3", "-n", 20,
            "--batch-size", 8, "--context", "random", "--guidance", 1, "--precision", "fp32", "--seed", 3]
    assert main([str(a) for a in args] + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun(args + ["--out", tmp_path / "two"])
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("one", "two"))
    assert two["world_size"] == 2 and "world_size" not in one
    timing = {"seconds"}
    for a, b in zip(one["results"], two["results"], strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert one["noise"] == two["noise"] and one["real_class_mix"] == two["real_class_mix"]


def test_two_processes_invert_the_same_latents_as_one(tiny_model_path, sprites_npy, tmp_path):
    from spritediff.cli import main

    args = ["invert", "--model", tiny_model_path, sprites_npy, "--steps", 4, "--batch-size", 8, "--method", "exact"]
    assert main([str(a) for a in args] + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun(args + ["--out", tmp_path / "two"])
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("latents.npy", "latents_t1.npy", "reconstructions.npy"):
        assert np.array_equal(np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)), name
    one, two = (json.loads((tmp_path / name / "run.json").read_text()) for name in ("one", "two"))
    assert one["errors"] == two["errors"] and two["world_size"] == 2 and len(one["errors"]) == 40
