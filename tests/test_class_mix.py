"""The training class mix: stored by `train`, read back with the model, drawn by the "mix" context, and
`spritediff sample`'s default for a model that stores one."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import one_line_error, run, small_data, tiny_model

from spritediff import load, sample
from spritediff.checkpoint import load_model, save_model
from spritediff.context import parse_context
from spritediff.data import load_data
from spritediff.errors import SpriteDiffError
from spritediff.safetensors_io import METADATA_KEY
from spritediff.engine import sample_generators
from spritediff.sprites import COURSE_CLASSES
from spritediff.train import TrainConfig, run_training

SHARES = (0.1, 0.2, 0.3, 0.4, 0.0)


def mixed_model(shares=SHARES):
    model = tiny_model()
    model.class_mix = shares
    return model


def test_mix_draws_each_class_with_its_share():
    n = 4000
    rows = parse_context("mix", COURSE_CLASSES, n, sample_generators(3, n, stream=1), SHARES)
    assert rows.shape == (n, 5) and torch.equal(rows.sum(1), torch.ones(n))  # one class per sample
    counts = rows.sum(0).numpy()
    assert counts[4] == 0  # a class of share 0 is never drawn
    for count, share in zip(counts[:4], SHARES[:4]):
        assert abs(count - n * share) < 5 * np.sqrt(n * share * (1 - share)), (counts, SHARES)


def test_a_sample_keeps_its_class_whatever_n():
    many = parse_context("mix", COURSE_CLASSES, 40, sample_generators(0, 40, stream=1), SHARES)
    few = parse_context("mix", COURSE_CLASSES, 3, sample_generators(0, 3, stream=1), SHARES)
    assert torch.equal(many[:3], few)


def test_mix_without_a_stored_mix_is_a_user_error():
    with pytest.raises(SpriteDiffError, match="stores none"):
        parse_context("mix", COURSE_CLASSES, 2, sample_generators(0, 2), None)
    with pytest.raises(SpriteDiffError, match="stores none"):
        sample(tiny_model(), "ddim", 2, n=2, context="mix", frames=False)


def test_sample_mix_equals_the_drawn_classes_given_as_a_tensor_in_any_batches():
    model = mixed_model()
    drawn = parse_context("mix", COURSE_CLASSES, 7, sample_generators(5, 7, stream=1), SHARES)
    common = dict(n=7, guidance=1.0, seed=5, frames=False, precision="fp32")
    by_spec = sample(model, "ddim", 3, context="mix", batch_size=3, **common).images
    by_tensor = sample(model, "ddim", 3, context=drawn, batch_size=7, **common).images
    assert np.array_equal(by_spec, by_tensor)


def test_class_mix_round_trips_and_older_files_have_none(tmp_path):
    save_model(mixed_model(), tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").class_mix == SHARES
    save_model(tiny_model(), tmp_path / "old.safetensors")
    assert load_model(tmp_path / "old.safetensors").class_mix is None


@pytest.mark.parametrize("mix", [[0.5, 0.5], [0.5, 0.6, 0, 0, 0], [-0.1, 0.3, 0.3, 0.3, 0.2], [True, 0, 0, 0, 0],
                                 "0.2", [float("nan")] * 5])
def test_a_bad_class_mix_is_refused_on_load_and_save(tmp_path, mix):
    path = tmp_path / "m.safetensors"
    save_model(tiny_model(), path)
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()[METADATA_KEY])
    config["class_mix"] = mix
    save_file(load_file(path), path, metadata={METADATA_KEY: json.dumps(config)})
    with pytest.raises(SpriteDiffError, match="class_mix"):
        load_model(path)
    if isinstance(mix, list):
        with pytest.raises(SpriteDiffError, match="class_mix"):
            save_model(mixed_model(tuple(mix)), tmp_path / "bad.safetensors")


def test_training_stores_the_label_shares(tmp_path):
    x, y = small_data(tmp_path, n=24)
    labels = np.load(y)
    model = run_training(TrainConfig(steps=1, batch=8, n_feat=8), load_data(x, y), tmp_path / "m.safetensors",
                         torch.device("cpu"), progress=False)
    expected = tuple((labels.sum(0) / labels.sum()).tolist())
    assert load_model(tmp_path / "m.safetensors").class_mix == pytest.approx(expected, abs=1e-12)
    assert model.class_mix == pytest.approx(expected, abs=1e-12)


def test_training_without_labels_stores_no_mix(tmp_path):
    x, _ = small_data(tmp_path, n=24)
    run_training(TrainConfig(steps=1, batch=8, n_feat=8), load_data(x), tmp_path / "m.safetensors",
                 torch.device("cpu"), progress=False)
    assert load_model(tmp_path / "m.safetensors").class_mix is None


def test_the_default_model_stores_the_training_labels_shares(sprites_dir):
    labels = np.load(sprites_dir / "sprite_labels_base1788.npy").astype(np.float64)
    assert load().class_mix == pytest.approx(tuple(labels.sum(0) / labels.sum()), abs=1e-12)


def test_sample_cli_defaults_to_mix_where_the_model_has_one(tmp_path, tiny_model_path):
    save_model(mixed_model(), tmp_path / "mixed.safetensors")
    for model, context, expected in [(tmp_path / "mixed.safetensors", [], "mix"),
                                     (tmp_path / "mixed.safetensors", ["--context", "none"], "none"),
                                     (tiny_model_path, [], None)]:
        out = tmp_path / f"out_{expected}"
        assert run(["sample", "--model", model, "--n", 3, "--steps", 2, "--no-gif", *context, "--out", out]) == 0
        assert json.loads((out / "run.json").read_text())["context"] == expected


def test_sample_cli_mix_on_a_model_without_one_is_one_line(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "out"
    assert run(["sample", "--model", tiny_model_path, "--context", "mix", "--n", 2, "--out", out]) == 2
    one_line_error(capsys, "mix", "stores none")
    assert not out.exists()


def test_the_latent_edits_draw_the_mix_as_sample_does():
    from spritediff.latent.api import edit

    model, image = mixed_model(), np.full((1, 16, 16, 3), 90, np.uint8)
    drawn = parse_context("mix", COURSE_CLASSES, 3, sample_generators(4, 3, stream=1), SHARES)
    common = dict(strength=0.5, n=3, seed=4, steps=4, guidance=1.0)
    mixed = edit(model, image, context="mix", **common).images
    for i, row in enumerate(drawn):  # sprite i has its own noise stream: the same sprite as with its class named
        one_class = edit(model, image, context=COURSE_CLASSES[int(row.argmax())], **common).images
        assert np.array_equal(mixed[i], one_class[i])
    assert len({int(row.argmax()) for row in drawn}) > 1  # the draw gave sprites of different classes


@pytest.mark.parametrize("context", ["mix", "random"])
def test_interpolation_refuses_a_drawn_context_in_one_line(context):
    from spritediff.latent.api import interpolate

    with pytest.raises(SpriteDiffError, match="draws a class per sample"):
        interpolate(mixed_model(), seeds=[0, 1], frames=3, context=context)


def test_the_playground_serves_the_mix_only_for_a_model_that_stores_one():
    from spritediff.serve.config import ServeConfig
    from spritediff.serve.validation import parse_context_field

    model = mixed_model()
    context = parse_context_field("mix", model, ServeConfig())
    assert context.label(model.classes) == context.spec(model.classes) == "mix"
    assert torch.equal(context.rows(model, 6, 2), parse_context("mix", COURSE_CLASSES, 6,
                                                               sample_generators(2, 6, stream=1), SHARES))
    with pytest.raises(SpriteDiffError, match="stores none"):
        parse_context_field("mix", tiny_model(), ServeConfig())
    blend = parse_context_field("hero=1,food=0.5", model, ServeConfig())
    assert blend.mode == "blend" and blend.label(model.classes) == "hero=1,food=0.5"


def test_a_course_checkpoint_without_a_context_says_so_on_stderr_and_in_run_json(tmp_path, capsys):
    import json

    import torch

    from conftest import run, tiny_model

    pth = tmp_path / "course.pth"
    torch.save(tiny_model().net.state_dict(), pth)
    assert run(["sample", "--model", pth, "--n", 2, "--steps", 2, "--no-gif", "--out", tmp_path / "o"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no training class mix" in err and "--context random" in err
    assert "--context random" in json.loads((tmp_path / "o" / "run.json").read_text())["context_note"]
    assert run(["sample", "--model", pth, "--n", 2, "--steps", 2, "--no-gif", "--context", "random",
                "--out", tmp_path / "r"]) == 0
    assert "note" not in capsys.readouterr().err
    assert "context_note" not in json.loads((tmp_path / "r" / "run.json").read_text())
