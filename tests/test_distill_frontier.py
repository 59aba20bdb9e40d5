"""benchmarks/distill_frontier.py: which row of an eval output each label takes, and that it draws a figure."""
import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "distill_frontier.py"


def result(spec: str, value: float) -> dict:
    return {"spec": spec, "fd": value, "precision": value, "recall": value, "c2st": value}


def test_teacher_labels_take_the_ddim20_row_students_their_first_and_the_figure_is_written(tmp_path, monkeypatch):
    for seed in (1, 2):
        (tmp_path / f"t{seed}.json").write_text(json.dumps(
            {"results": [result("ddim:4", 9.0), result("ddim:20", 0.1 * seed), result("ddpm:50", 9.0)]}))
        (tmp_path / f"s{seed}.json").write_text(json.dumps({"results": [result("ddim:4", 0.5)]}))
    frontier = runpy.run_path(str(SCRIPT))
    label, teacher = frontier["rows"](f"teacher ddim:20={tmp_path}/t*.json")
    assert label == "teacher ddim:20" and [r["fd"] for r in teacher] == [0.1, 0.2]
    assert frontier["mean"](teacher, "fd") == pytest.approx(0.15)
    assert [r["fd"] for r in frontier["rows"](f"student, end={tmp_path}/s1.json,{tmp_path}/s2.json")[1]] == [0.5, 0.5]
    out = tmp_path / "frontier.png"
    monkeypatch.setattr(sys, "argv", ["distill_frontier.py", "--out", str(out), f"teacher={tmp_path}/t*.json",
                                      f"student seed 1, end={tmp_path}/s*.json"])
    frontier["main"]()
    assert out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no eval output matches"):
        frontier["rows"](f"nothing={tmp_path}/missing*.json")
