"""The `spritediff serve` command: its options and defaults, one-line errors, a real start and a clean stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from spritediff.cli import main
from spritediff.serve.cli import is_loopback
from spritediff.serve.client import PlaygroundClient


def test_serve_is_a_command_with_safe_defaults(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--help"])
    assert caught.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--model", "--host", "--port", "--device", "--max-active", "--queue", "--max-batch-rows",
                   "--batch-wait-ms", "--no-batching", "--precision"):
        assert option in text
    assert "default 127.0.0.1" in text and "default 7860" in text


def test_the_cli_does_not_import_the_web_stack_until_serve_runs():
    code = ("import sys; from spritediff.cli import build_parser; build_parser(); "
            "print(any(m.split('.')[0] in ('starlette', 'uvicorn') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("argv, message", [
    (["serve", "--model", "no-such-model.safetensors"], "model file not found"),
    (["serve", "--port", "70000"], "must be between 0 and 65535"),
    (["serve", "--device", "tpu"], "unknown device"),
    (["serve", "--max-active", "0"], "must be between 1 and 1024"),
    (["serve", "--host", "no such host name"], "cannot listen on"),
])
def test_bad_serve_options_are_one_line_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_port_in_use_is_one_line_exit_2(capsys, tiny_model_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(tiny_model_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_loopback_names():
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")


def test_serve_starts_answers_and_stops_cleanly_on_sigterm(tiny_model_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "spritediff", "serve", "--model", str(tiny_model_path),
                                "--port", "0", "--precision", "fp32"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("spritediff serve: http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[2].rstrip("/")
        client = PlaygroundClient(url, timeout=30)
        assert client.get_json("/api/info")["model"]["name"] == tiny_model_path.name  # a name, never the path
        assert client.sample(n=2, steps=3)[-1]["type"] == "done"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_default_model_races_the_shipped_student_and_another_model_races_none(tmp_path):
    from spritediff.serve.cli import raced_student

    student = raced_student(None, None)
    assert student is not None and student.path == "distilled" and student.student.calls == 4
    assert raced_student("default", None).path == "distilled"
    assert raced_student(None, "none") is None
    assert raced_student(str(tmp_path / "other.safetensors"), None) is None
