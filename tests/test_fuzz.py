"""Property-based fuzzing (Hypothesis) of the public entries: CLI argument vectors, API calls, corrupt files.

The property, for every generated input: either success with valid, finite output, or exit code 2 /
SpriteDiffError with a one-line message; never another exception, never a file outside --out changed.

In CI the suite is bounded (a few hundred examples in all, derandomized: the same inputs every run).
By hand, for a longer and random search:
    SPRITEDIFF_FUZZ_SCALE=50 OMP_NUM_THREADS=1 python -m pytest -q tests/test_fuzz.py
multiplies every test's examples by 50 and draws fresh random inputs.
"""
import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model

from hypothesis import HealthCheck, event, given, settings  # noqa: E402 (a [test] dependency: never skipped)
from hypothesis import strategies as st  # noqa: E402

import spritediff  # noqa: E402
from spritediff.checkpoint import save_model  # noqa: E402
from spritediff.cli import main  # noqa: E402
from spritediff.data import load_data  # noqa: E402
from spritediff.errors import SpriteDiffError  # noqa: E402
from spritediff.engine import SampleResult  # noqa: E402
from spritediff.specs import parse_sampler_specs  # noqa: E402

SCALE = int(os.environ.get("SPRITEDIFF_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int):
    """examples in CI (derandomized: a fixed sequence of inputs); examples * SCALE, freshly random, by hand."""
    return settings(max_examples=examples * SCALE, derandomize=SCALE == 1, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


MODEL = tiny_model()
NUMBER_TEXTS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "NaN", "1e309", "-0", "abc", "", " ", "0x10", "1_0", "2.5", "1e-300",
                     "9" * 30, "-9" * 20]),
    st.integers(-3, 6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
SMALL_COUNTS = st.one_of(st.integers(-3, 5).map(str), st.sampled_from(["10000000000000", "abc", "nan", "2.0", ""]))
SAMPLERS = st.sampled_from(["ddim", "ddpm", "dpmpp-2m", "dpmpp-3m", "unipc", "euler", "heun", "plms", "DDIM", "dim",
                            ""])
CONTEXTS = st.one_of(st.sampled_from(["hero", "random", "none", "hero=1,food=0.6", "hero=inf", "hero=nan", "dragon",
                                      "hero=1,hero=2", "", ",", "=", "hero=", "food=1e38"]),
                     st.text(max_size=12))
OPTION_VALUES = st.one_of(NUMBER_TEXTS, st.sampled_from(["course", "posterior", "trailing", "karras", "odd", "bh1",
                                                         "true", "no", "maybe", "heun", "ab"]))


def snapshot(root: Path, skip: Path) -> dict:
    """Every file under root (not under skip) -> its bytes."""
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and skip not in p.parents and p != skip}


def run_cli(argv: list[str]) -> tuple[int, str]:
    """main(argv) in-process: (exit code, stderr). Any exception other than SystemExit(0) fails the property."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def assert_exit_property(code: int, err: str) -> None:
    event(f"exit {code}")
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("spritediff: error:") and "Traceback" not in err, err


VALID_SAMPLE_VALUES = {  # a valid value of each sample option, so that many generated runs succeed
    "--sampler": st.sampled_from(["ddim", "ddpm", "dpmpp-2m", "unipc", "heun", "plms"]),
    "--eta": st.sampled_from(["0", "0.5", "1"]), "--variance": st.sampled_from(["course", "posterior"]),
    "--spacing": st.sampled_from(["trailing", "leading", "karras", "logsnr"]), "--order": st.sampled_from(["1", "3"]),
    "--warmup": st.sampled_from(["ab", "heun"]), "--corrector": st.sampled_from(["true", "off"]),
    "--batch-size": st.integers(1, 5).map(str), "--seed": st.integers(0, 2**63 - 1).map(str),
    "--context": st.sampled_from(["hero", "random", "none", "hero=1,food=0.6"]),
    "--guidance": st.sampled_from(["0", "0.5", "3"]), "--nrow": st.integers(1, 9).map(str),
    "--gif-n": st.integers(1, 9).map(str), "--device": st.sampled_from(["cpu", "auto"]),
}
ANY_SAMPLE_VALUES = {flag: st.one_of(OPTION_VALUES, CONTEXTS) for flag in VALID_SAMPLE_VALUES}
ANY_SAMPLE_VALUES.update({"--sampler": SAMPLERS, "--context": CONTEXTS, "--batch-size": SMALL_COUNTS,
                          "--device": st.sampled_from(["cpu", "auto", "meta", "xpu", "cuda:99", "", "cpu:0"])})


@st.composite
def sample_argvs(draw):
    """A `spritediff sample` argument vector: each option absent (3 in 4), valid or not; --steps always bounded."""
    valid_steps, valid_n = draw(st.integers(0, 3)) > 0, draw(st.integers(0, 3)) > 0
    argv = ["sample", "--steps", draw(st.integers(1, 4).map(str) if valid_steps else NUMBER_TEXTS),
            "--n", draw(st.integers(1, 5).map(str) if valid_n else SMALL_COUNTS)]
    for flag in VALID_SAMPLE_VALUES:
        if draw(st.integers(0, 3)) == 0:
            valid = draw(st.integers(0, 3)) > 0
            argv += [flag, draw(VALID_SAMPLE_VALUES[flag] if valid else ANY_SAMPLE_VALUES[flag])]
    if draw(st.integers(0, 3)) == 0:
        argv.append(draw(st.sampled_from(["--no-gif", "--eager", "--bogus"])))
    return argv


@fuzz_settings(60)
@given(argv=sample_argvs(), out_kind=st.sampled_from(["new"] * 3 + ["existing", "missing-parent"] * 2 +
                                                     ["file", "empty", "long"]))
def test_sample_cli_never_crashes_and_touches_only_out(tiny_model_path, argv, out_kind):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "keep.txt").write_text("mine")
        (root / "existing").mkdir()
        (root / "existing" / "run.json").write_text("{}")
        (root / "file").write_text("a file")
        out = {"new": root / "out", "existing": root / "existing", "file": root / "file",
               "missing-parent": root / "missing" / "out", "empty": "", "long": root / ("x" * 300)}[out_kind]
        guarded = {"new": root / "out", "existing": root / "existing",  # what the run may change
                   "missing-parent": root / "missing"}.get(out_kind, root / "out")
        before = snapshot(root, guarded)
        code, err = run_cli([*argv, "--model", str(tiny_model_path), "--out", str(out)])
        assert_exit_property(code, err)
        assert snapshot(root, guarded) == before
        assert not list(root.rglob(".spritediff-stage-*"))  # staging folders are always cleaned up
        if code == 0:
            check_sample_output(Path(out))
        elif out_kind in ("new", "missing-parent"):
            assert not guarded.exists()


def check_sample_output(out: Path) -> None:
    images = np.load(out / "samples.npy")
    record = json.loads((out / "run.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert images.dtype == np.uint8 and images.shape == (record["n"], 16, 16, 3)
    assert math.isfinite(record["seconds"]) and record["nfe"] >= 1


API_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=6), st.sampled_from([2**70, -2**70, np.int64(2), np.float32("nan"),
                                                             torch.device("cpu"), torch.zeros(2, 5), [1, 2], {}]))


VALID_API_VALUES = {
    "sampler": st.sampled_from(["ddim", "ddpm", "unipc", "plms"]), "context": st.sampled_from(["hero", "random", None]),
    "guidance": st.floats(0, 5), "seed": st.integers(0, 2**63 - 1), "device": st.sampled_from(["cpu", None]),
    "batch_size": st.integers(1, 4), "frames": st.one_of(st.booleans(), st.integers(0, 5)),
    "spacing": st.sampled_from(["trailing", "leading", "karras"]),
}


@st.composite
def api_calls(draw):
    """Keyword arguments of spritediff.sample, each absent, of the right type or not; steps and n stay small."""
    kwargs = {"steps": draw(st.integers(1, 4) if draw(st.integers(0, 3)) else API_VALUES),
              "n": draw(st.integers(1, 4) if draw(st.integers(0, 3)) else API_VALUES)}
    if isinstance(kwargs["n"], (int, np.integer)) and not isinstance(kwargs["n"], bool) and kwargs["n"] > 6:
        kwargs["n"] = 3  # a valid but large n would only make the test slow
    if isinstance(kwargs["steps"], (int, np.integer)) and not isinstance(kwargs["steps"], bool) and kwargs["steps"] > 6:
        kwargs["steps"] = 600  # above T: refused
    for key, values in {"sampler": st.one_of(SAMPLERS, API_VALUES), "context": st.one_of(CONTEXTS, API_VALUES),
                        "guidance": API_VALUES, "seed": API_VALUES, "device": API_VALUES, "batch_size": API_VALUES,
                        "frames": API_VALUES, "eta": API_VALUES, "spacing": st.one_of(OPTION_VALUES, API_VALUES),
                        "order": API_VALUES, "zeta": API_VALUES}.items():
        if draw(st.integers(0, 3)) == 0:
            kwargs[key] = draw(VALID_API_VALUES.get(key, values) if draw(st.booleans()) else values)
    if isinstance(kwargs.get("batch_size"), int) and kwargs["batch_size"] > 2**40:
        kwargs["batch_size"] = 2
    return kwargs


@fuzz_settings(80)
@given(kwargs=api_calls())
def test_api_sample_returns_finite_images_or_one_line_errors(kwargs):
    try:
        result = spritediff.sample(MODEL, **kwargs)
    except SpriteDiffError as err:
        assert str(err) and "\n" not in str(err)
        event("SpriteDiffError")
        return
    event("sampled")
    assert isinstance(result, SampleResult) and result.images.dtype == np.uint8
    assert result.images.shape[1:] == (16, 16, 3) and result.nfe >= 1 and math.isfinite(result.seconds)


@st.composite
def damaged_bytes(draw, original: bytes):
    """original truncated at a random offset, or with a few bytes overwritten at random offsets."""
    if draw(st.booleans()):
        return original[:draw(st.integers(0, len(original) - 1))]
    data = bytearray(original)
    edits = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    for offset, value in edits:
        data[offset] = value
    return bytes(data)


def model_bytes(suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m{suffix}"
        if suffix == ".pth":
            torch.save(MODEL.net.state_dict(), path)
        else:
            save_model(MODEL, path)
        return path.read_bytes()


SAFETENSORS, PTH = model_bytes(".safetensors"), model_bytes(".pth")
HEADER = int.from_bytes(SAFETENSORS[:8], "little") + 8  # damage the JSON header and metadata more often


@fuzz_settings(60)
@given(suffix=st.sampled_from([".safetensors", ".pth"]), header_only=st.booleans(), data=st.data())
def test_damaged_model_files_load_and_sample_or_fail_in_one_line(suffix, header_only, data):
    original = SAFETENSORS if suffix == ".safetensors" else PTH
    original = original[:HEADER] if header_only and suffix == ".safetensors" else original
    damaged = data.draw(damaged_bytes(original))
    if header_only and suffix == ".safetensors":
        damaged += SAFETENSORS[HEADER:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m{suffix}"
        path.write_bytes(damaged)
        try:
            model = spritediff.load(path)
            result = spritediff.sample(model, "ddim", steps=1, n=1, context="random" if model.classes else None)
        except SpriteDiffError as err:
            assert str(err) and "\n" not in str(err)
            event("SpriteDiffError")
            return
    event("loaded and sampled")
    assert result.images.shape == (1, model.net.height, model.net.height, 3)


@fuzz_settings(40)
@given(text=st.one_of(st.text(alphabet="dimpn2:=,.etaspcingorul0135-ekx ", max_size=24), st.text(max_size=10)))
def test_spec_strings_parse_or_fail_in_one_line(text):
    try:
        specs = parse_sampler_specs(text)
    except SpriteDiffError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert specs and all(1 <= spec.steps <= 500 for spec in specs)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


IMAGES = npy_bytes(np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
LABELS = npy_bytes(np.eye(5)[np.arange(12) % 5])


@fuzz_settings(30)
@given(which=st.sampled_from(["images", "labels"]), data=st.data(),
       extra=st.lists(st.sampled_from([["--epochs", "nan"], ["--epochs", "0.5"], ["--lr", "inf"], ["--lr", "1e-3"],
                                       ["--seed", "-1"], ["--batch", "0"], ["--n-feat", "12"], ["--ema", "1"],
                                       ["--context-drop", "2"], ["--overwrite"], ["--resume"], ["--precision", "fp8"],
                                       ["--snapshots", "1,x"], ["--device", "meta"]]), max_size=3))
def test_train_with_damaged_data_or_bad_options_fails_in_one_line(which, data, extra):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "x.npy").write_bytes(IMAGES if which == "labels" else data.draw(damaged_bytes(IMAGES)))
        (root / "y.npy").write_bytes(LABELS if which == "images" else data.draw(damaged_bytes(LABELS)))
        out = root / "m.safetensors"
        before = snapshot(root, out)
        flags = [word for option in extra for word in option]
        steps = [] if "--epochs" in flags else ["--steps", "1"]
        code, err = run_cli(["train", "--data", str(root / "x.npy"), "--labels", str(root / "y.npy"), "--out",
                             str(out), *steps, "--batch", "4", "--n-feat", "8", *flags])
        assert_exit_property(code, err)
        after = snapshot(root, out)
        written = {str(root / n) for n in ("m.train.pt", "m.log.jsonl")} if code == 0 else set()
        assert {k: v for k, v in after.items() if k not in written} == before
        if code == 0:
            data_ok = load_data(root / "x.npy", root / "y.npy")
            assert spritediff.load(out).net.height == data_ok.images.shape[1]
