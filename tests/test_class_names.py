"""A model knows exactly the classes it was trained with: the course's names only for the course's labels file."""
from __future__ import annotations

import numpy as np
from conftest import one_line_error, run, small_data

from spritediff import load
from spritediff.data import is_course_labels, load_data


def test_own_five_column_labels_get_generic_names(tmp_path):
    x, y = small_data(tmp_path, classes=5)
    assert load_data(x, y).classes == ("class0", "class1", "class2", "class3", "class4")


def test_the_course_labels_are_recognised_by_content(sprites_dir):
    labels = np.load(sprites_dir / "sprite_labels_base1788.npy")
    assert is_course_labels(labels) and is_course_labels(np.tile(labels, (50, 1)))
    assert is_course_labels(labels.astype(np.float32))  # the same one-hot values in another dtype
    assert not is_course_labels(labels[::-1])  # the same counts in another order are someone else's labels
    assert not is_course_labels(labels[:1000])
    tampered = np.tile(labels, (50, 1))
    tampered[-1] = np.roll(tampered[-1], 1)  # one row of one tile differs: not the course's file
    assert not is_course_labels(tampered)


def test_a_model_of_own_labels_refuses_the_course_names(tmp_path, capsys):
    x, y = small_data(tmp_path, classes=5)
    out = tmp_path / "m.safetensors"
    assert run(["train", "--data", x, "--labels", y, "--out", out, "--n-feat", 8, "--steps", 1]) == 0
    assert load(out).classes == ("class0", "class1", "class2", "class3", "class4")
    capsys.readouterr()
    code = run(["sample", "--model", out, "--n", 2, "--steps", 2, "--sampler", "ddim", "--context", "hero",
                "--out", tmp_path / "s"])
    assert code == 2 and not (tmp_path / "s").exists()
    one_line_error(capsys, "hero", "class0")
    assert run(["sample", "--model", out, "--n", 2, "--steps", 2, "--sampler", "ddim", "--context", "class3",
                "--out", tmp_path / "s"]) == 0

