"""Issue 10: every bad input is one line and exit 2 (or SpriteDiffError), nothing is silently wrong, memory is bounded.

One test per kind of bad input the issue's campaign found; each asserts the message names the argument.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error, run, small_data, tiny_model
from PIL import Image
from safetensors.torch import load_file, save_file

import spritediff
from spritediff import sampling
from spritediff import train as train_module
from spritediff.checkpoint import METADATA_KEY, save_model
from spritediff.data import load_data
from spritediff.errors import SpriteDiffError
from spritediff.samplers import REGISTRY, SAMPLERS
from spritediff.specs import SHARED_ARGUMENTS, parse_sampler_specs
from spritediff.train import TrainConfig, run_training, state_path


def train_args(x, y, out, *extra):
    return ["train", "--data", x, "--labels", y, "--out", out, "--steps", 2, "--batch", 8, "--n-feat", 8,
            "--ckpt-every", 1, *extra]


# --- non-finite numbers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--sampler", "ddim", "--eta", "nan"], ["eta must be a finite number"]),
    (["--sampler", "ddim", "--eta", "inf"], ["eta must be a finite number"]),
    (["--eta", "0.5"], ["ddpm takes no option eta"]),  # the default sampler is ddpm
    (["--guidance", "inf", "--context", "hero"], ["--guidance", "finite"]),
    (["--guidance", "nan", "--context", "hero"], ["--guidance", "finite"]),
    (["--context", "hero=inf"], ["context weight for 'hero'", "finite"]),
    (["--context", ""], ["empty context", "'none'"]),
    (["--context", "  "], ["empty context"]),
    (["--context", "hero=nan"], ["context weight for 'hero'", "finite"]),
    (["--seed", "-1"], ["--seed", "between 0 and"]),
    (["--nrow", "1000"], ["--nrow", "between 1 and 256"]),
    (["--gif-n", "0"], ["--gif-n", "between 1 and 256"]),
    (["--steps", "2.5"], ["--steps", "integer"]),
    (["--device", "meta"], ["unknown device 'meta'"]),
    (["--device", "mps"], ["unknown device 'mps'"]),
    (["--device", "xpu"], ["unknown device 'xpu'"]),
    (["--sampler", "unipc", "--order", "7"], ["unknown --order 7", "1, 2, 3"]),
    (["--sampler", "ddim", "--order", "2"], ["ddim takes no option order"]),
])
def test_sample_refuses_bad_numbers_before_any_work(tiny_model_path, tmp_path, capsys, args, words):
    out = tmp_path / "out"
    assert run(["sample", "--model", tiny_model_path, "--n", 2, "--steps", 2, *args, "--out", out]) == 2
    one_line_error(capsys, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output folder, no staging folder


@pytest.mark.parametrize("spec, words", [
    ("ddim:5:eta=nan", ["eta must be a finite number"]),
    ("ddim:5:eta=inf", ["eta must be a finite number"]),
    ("ddim:5:eta=2", ["eta must be between 0 and 1"]),
    ("plms:5:warmup=rk4", ["unknown warmup 'rk4'"]),
])
def test_spec_options_are_checked_from_their_declarations(spec, words):
    with pytest.raises(SpriteDiffError) as info:
        parse_sampler_specs(spec)
    assert all(word in str(info.value) for word in words) and "\n" not in str(info.value)


def test_every_sampler_declares_exactly_its_keyword_options():
    import inspect

    for name, function in SAMPLERS.items():
        parameters = {p.name: p.default for p in inspect.signature(function).parameters.values()
                      if p.name not in SHARED_ARGUMENTS}
        assert {k: o.default for k, o in REGISTRY[name].options.items()} == parameters, name
        for key, option in REGISTRY[name].options.items():
            assert option.check(option.default, key) == option.default  # every default is allowed


def test_a_model_with_nan_weights_is_refused_at_load(tmp_path, capsys):
    model = tiny_model()
    with torch.no_grad():
        model.net.out[-1].bias[0] = float("nan")
    save_model(model, tmp_path / "nan.safetensors")
    with pytest.raises(SpriteDiffError, match="weights hold NaN or inf.*out.3.bias"):
        spritediff.load(tmp_path / "nan.safetensors")
    assert run(["sample", "--model", tmp_path / "nan.safetensors", "--out", tmp_path / "o"]) == 2
    one_line_error(capsys, "NaN or inf")
    assert not (tmp_path / "o").exists()


def test_a_non_finite_sample_is_an_error_naming_the_cause():
    model = tiny_model()
    with torch.no_grad():
        model.net.out[-1].bias[0] = float("inf")  # an in-memory model: nothing checked it at load
    with pytest.raises(SpriteDiffError, match="sample 0 is not finite.*weights hold NaN or inf"):
        spritediff.sample(model, "ddim", steps=2, n=2)
    with pytest.raises(SpriteDiffError, match=r"not finite.*cause: the guidance \(1e\+38\) is too large$"):
        spritediff.sample(tiny_model(), "ddim", steps=2, n=2, context="hero", guidance=1e38)
    with pytest.raises(SpriteDiffError, match=r"not finite.*cause: the context weights \(largest 1e\+38\) are too"):
        spritediff.sample(tiny_model(), "ddim", steps=2, n=2, context="hero=1e38", guidance=0)


def test_an_overflow_with_a_context_does_not_blame_the_guidance():
    model = tiny_model()
    with torch.no_grad():
        model.net.out[-1].bias[0] = 3e38  # finite weights whose output overflows
    with pytest.raises(SpriteDiffError, match=r"sample 0 is not finite.*cause: the model's output overflowed"):
        spritediff.sample(model, "ddim", steps=2, n=2, context="hero", guidance=1)


def test_json_written_is_strict(tmp_path):
    from spritediff.outputs import json_text

    assert json.loads(json_text({"a": [1.5, {"b": 2}]})) == {"a": [1.5, {"b": 2}]}
    with pytest.raises(SpriteDiffError, match=r"non-finite number at a\.1\.b"):
        json_text({"a": [1.5, {"b": float("nan")}]})


def test_run_json_parses_as_strict_json(tiny_model_path, tmp_path):
    assert run(["sample", "--model", tiny_model_path, "--n", 3, "--steps", 2, "--out", tmp_path / "o"]) == 0

    def refuse(token):
        raise ValueError(f"non-strict JSON constant {token}")

    record = json.loads((tmp_path / "o" / "run.json").read_text(), parse_constant=refuse)
    assert record["n"] == 3 and record["batch_size"] == 3 and record["gif_n"] == 3


# --- crafted and truncated files ----------------------------------------------------------------------------------

def rewrite_metadata(source: Path, target: Path, change) -> Path:
    """target: source's tensors with its spritediff metadata passed through change(dict) -> JSON-able value."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        config = json.loads(f.metadata()[METADATA_KEY])
    save_file(load_file(str(source)), str(target), metadata={METADATA_KEY: json.dumps(change(config))})
    return target


@pytest.mark.parametrize("change, words", [
    (lambda c: {**c, "net": {**c["net"], "n_feat": "abc"}}, ["net.n_feat must be an integer"]),
    (lambda c: {k: v for k, v in c.items() if k != "schedule"}, ["'schedule' is missing"]),
    (lambda c: {k: v for k, v in c.items() if k != "classes"}, ["'classes' is missing"]),
    (lambda c: [c], ["not a JSON object"]),
    (lambda c: {**c, "schedule": {**c["schedule"], "beta_end": 2}}, ["beta_end < 1"]),
    (lambda c: {**c, "classes": ["hero", "food"]}, ["classes must be 5 distinct"]),
    (lambda c: {**c, "net": {**c["net"], "height": 68}}, ["net.height must be an integer in 8..64"]),
])
def test_crafted_metadata_is_one_line(tiny_model_path, tmp_path, capsys, change, words):
    crafted = rewrite_metadata(tiny_model_path, tmp_path / "crafted.safetensors", change)
    assert run(["sample", "--model", crafted, "--out", tmp_path / "o"]) == 2
    one_line_error(capsys, *words)


@pytest.mark.parametrize("name", ["empty.pth", "empty.pt", "empty.safetensors"])
def test_empty_model_files_are_one_line(tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"")
    assert run(["sample", "--model", tmp_path / name, "--out", tmp_path / "o"]) == 2
    one_line_error(capsys, name)


def test_a_model_of_another_extension_is_refused(tiny_model_path, tmp_path):
    other = tmp_path / "model.bin"
    other.write_bytes(tiny_model_path.read_bytes())
    with pytest.raises(SpriteDiffError, match="must end in .safetensors, .pth, .pt"):
        spritediff.load(other)


@pytest.mark.parametrize("target, words", [
    ("missing/y.safetensors", ["target folder", "does not exist"]),
    ("file/y.safetensors", ["target folder", "is not a folder"]),
    ("y.pth", ["target must end in .safetensors"]),
])
def test_convert_checks_its_target(tiny_model_path, tmp_path, capsys, target, words):
    (tmp_path / "file").write_text("x")
    assert run(["convert", tiny_model_path, tmp_path / target]) == 2
    one_line_error(capsys, *words)
    assert not (tmp_path / "y.pth").exists()


# --- output folders -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("out, words", [
    ("", ["--out must name a folder"]),
    ("x" * 300, ["--out", "300 bytes long"]),
    ("file/out", ["file is not a folder"]),
])
def test_bad_out_paths_are_refused_and_nothing_is_created(tiny_model_path, tmp_path, capsys, monkeypatch, out, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    assert run(["sample", "--model", tiny_model_path, "--n", 1, "--steps", 1, "--out", out]) == 2
    one_line_error(capsys, *words)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_missing_parents_of_out_are_made_only_when_results_are_in_place(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "out"
    assert run(["sample", "--model", tiny_model_path, "--n", 1, "--steps", 1, "--context", "dragon", "--out", out]) == 2
    assert list(tmp_path.iterdir()) == []
    assert run(["sample", "--model", tiny_model_path, "--n", 1, "--steps", 1, "--out", out]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["denoise.gif", "grid.png", "run.json", "samples.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no staging folder left anywhere


def test_a_failed_sample_creates_no_folder(tiny_model_path, tmp_path, capsys):
    assert run(["sample", "--model", tiny_model_path, "--context", "dragon", "--out", tmp_path / "new"]) == 2
    one_line_error(capsys, "unknown class 'dragon'")
    assert list(tmp_path.iterdir()) == []


# --- the Python API -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"steps": 2.5}, ["steps must be an integer"]),
    ({"steps": True}, ["steps must be an integer"]),
    ({"n": "3"}, ["n must be an integer"]),
    ({"n": 0}, ["n must be at least 1"]),
    ({"seed": -1}, ["seed must be between 0 and"]),
    ({"seed": 1.0}, ["seed must be an integer"]),
    ({"guidance": float("nan")}, ["guidance must be a finite number"]),
    ({"guidance": "1"}, ["guidance must be a finite number"]),
    ({"sampler": 3}, ["unknown sampler 3"]),
    ({"sampler": "ddim", "eta": float("inf")}, ["eta must be a finite number"]),
    ({"sampler": "ddim", "eta": "0.5"}, ["eta must be a finite number"]),
    ({"sampler": "unipc", "order": 2.0}, ["order must be an integer"]),
    ({"context": 5}, ["context must be a spec string"]),
    ({"context": torch.zeros(2, 7)}, ["context tensor must have shape (2, 5)"]),
    ({"context": torch.full((2, 5), float("nan"))}, ["context tensor holds NaN"]),
    ({"device": "meta"}, ["unknown device 'meta'"]),
    ({"device": 0}, ["unknown device 0"]),
    ({"batch_size": 0}, ["batch_size must be between 1 and 65536"]),
    ({"frames": -1}, ["frames must be >= 0"]),
    ({"n": 10**13}, ["more than memory holds", "open_memmap"]),
    ({"out": np.zeros((2, 16, 16, 3), np.float32)}, ["out must be a writable (2, 16, 16, 3) uint8 array"]),
])
def test_api_arguments_raise_one_error_type(kwargs, words):
    with pytest.raises(SpriteDiffError) as info:
        spritediff.sample(tiny_model(), **{"steps": 2, "n": 2, **kwargs})
    assert all(word in str(info.value) for word in words), str(info.value)
    assert "\n" not in str(info.value)


def test_api_takes_a_torch_device_and_numpy_scalars():
    result = spritediff.sample(tiny_model(), "ddim", steps=np.int64(2), n=np.int32(2), guidance=np.float32(0.5),
                               context=np.eye(5, dtype=np.float32)[:2], device=torch.device("cpu"))
    assert result.images.shape == (2, 16, 16, 3) and result.settings["device"] == "cpu"


@pytest.mark.parametrize("model", [None, "model.safetensors", 3])
def test_api_refuses_what_is_not_a_model(model):
    with pytest.raises(SpriteDiffError, match="model must be a SpriteModel"):
        spritediff.sample(model, steps=2, n=1)


def test_api_load_refuses_a_wrong_type():
    with pytest.raises(SpriteDiffError, match="model must be a path"):
        spritediff.load(3)


# --- training -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [15, 4, 68])
def test_train_refuses_image_sizes_the_net_cannot_take(tmp_path, capsys, size):
    x, y = small_data(tmp_path, size=size)
    assert run(train_args(x, y, tmp_path / "m.safetensors")) == 2
    one_line_error(capsys, "multiple of 4 from 8 to 64", f"{size}x{size}")
    assert not (tmp_path / "m.safetensors").exists()


def test_train_refuses_labels_without_classes(tmp_path, capsys):
    x, y = small_data(tmp_path, classes=0)
    assert run(train_args(x, y, tmp_path / "m.safetensors")) == 2
    one_line_error(capsys, "y.npy", "labels")


def test_train_refuses_labels_outside_zero_one(tmp_path, capsys):
    x, _ = small_data(tmp_path)
    np.save(tmp_path / "big.npy", np.eye(5)[np.arange(24) % 5] * 1e300)  # float32 would make them inf
    assert run(train_args(x, tmp_path / "big.npy", tmp_path / "m.safetensors")) == 2
    one_line_error(capsys, "big.npy", "labels must be numbers in [0, 1]")


def test_train_names_a_corrupt_image(tmp_path, capsys):
    (tmp_path / "data" / "hero").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(tmp_path / "data" / "hero" / "a.png")
    (tmp_path / "data" / "hero" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert run(["train", "--data", tmp_path / "data", "--out", tmp_path / "m.safetensors", "--steps", 1]) == 2
    one_line_error(capsys, "b.png is not a readable image")


@pytest.mark.parametrize("args, words", [
    (["--epochs", "nan"], ["--epochs", "finite"]),
    (["--epochs", "inf"], ["--epochs", "finite"]),
    (["--epochs", "0"], ["--epochs", "must be > 0"]),
    (["--epochs", "1e300"], ["at most"]),
    (["--lr", "inf"], ["--lr", "finite"]),
    (["--seed", "-1"], ["--seed"]),
    (["--context-drop", "nan"], ["--context-drop", "finite"]),
    (["--device", "mps"], ["unknown device 'mps'"]),
])
def test_train_refuses_bad_numbers(tmp_path, capsys, args, words):
    x, y = small_data(tmp_path)
    argv = train_args(x, y, tmp_path / "m.safetensors")
    if args[0] == "--epochs":
        argv = argv[:argv.index("--steps")] + argv[argv.index("--steps") + 2:]
    assert run([*argv, *args]) == 2
    one_line_error(capsys, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]


@pytest.mark.parametrize("out, words", [
    ("x" * 300 + ".safetensors", ["--out: file name is 312 bytes long"]),
    ("missing/m.safetensors", ["--out folder", "does not exist"]),
    ("m.pt", ["--out must end in .safetensors"]),
    ("", ["--out must be a .safetensors file name"]),
])
def test_train_checks_its_out_before_any_work(tmp_path, capsys, monkeypatch, out, words):
    x, y = small_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert run(train_args(x, y, out)) == 2
    one_line_error(capsys, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]


def test_train_refuses_to_overwrite_a_run_unless_asked(tmp_path, capsys):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(train_args(x, y, out)) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert run(train_args(x, y, out, "--seed", 1)) == 2
    one_line_error(capsys, "already holds a run", "--resume", "--overwrite")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert run(train_args(x, y, out, "--seed", 1, "--overwrite")) == 0
    log = (tmp_path / "m.log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2]  # one step sequence, not two
    assert out.read_bytes() != before["m.safetensors"]


def test_resume_of_a_finished_run_says_so_and_extends_to_more_steps(tmp_path, capsys):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(train_args(x, y, out)) == 0
    capsys.readouterr()
    argv = [a for a in train_args(x, y, out) if a not in ("--steps", 2)]
    assert run([*argv, "--resume"]) == 2
    one_line_error(capsys, "is finished (2 of 2 steps)", "larger --steps")
    assert run([*argv, "--resume", "--steps", 3]) == 0
    assert torch.load(state_path(out), weights_only=True)["step"] == 3
    assert [json.loads(line)["step"] for line in (tmp_path / "m.log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_resume_of_an_unfinished_run_needs_its_own_steps(tmp_path, capsys, monkeypatch):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    config = TrainConfig(steps=4, batch=8, n_feat=8)
    data = load_data(x, y)
    original = train_module.Trainer.train_step

    def stop_at_two(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(train_module.Trainer, "train_step", stop_at_two)
    with pytest.raises(KeyboardInterrupt):
        run_training(config, data, out, torch.device("cpu"), 1, progress=False)
    monkeypatch.setattr(train_module.Trainer, "train_step", original)
    with pytest.raises(SpriteDiffError, match="stopped at step 2 of 4; resume it with --steps 4"):
        run_training(TrainConfig(steps=9, batch=8, n_feat=8), data, out, torch.device("cpu"), 1, resume=True,
                     progress=False)
    assert run_training(config, data, out, torch.device("cpu"), 1, resume=True, progress=False).info["steps_done"] == 4


@pytest.mark.parametrize("content, words", [
    (lambda good: b"", ["not a readable training checkpoint"]),
    (lambda good: {"step": 1}, ["missing or bad: config"]),
    (lambda good: [1, 2], ["not a spritediff training checkpoint"]),
    (lambda good: {k: v for k, v in good.items() if k != "ema"}, ["missing or bad: ema"]),
    (lambda good: {**good, "net": {k: v[:1] if v.dim() else v for k, v in good["net"].items()}}, ["do not fit"]),
])
def test_resume_from_a_bad_checkpoint_is_one_line(tmp_path, capsys, content, words):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(train_args(x, y, out)) == 0
    good = torch.load(state_path(out), weights_only=True)
    bad = content(good)
    if isinstance(bad, bytes):
        state_path(out).write_bytes(bad)
    else:
        torch.save(bad, state_path(out))
    capsys.readouterr()
    assert run([*train_args(x, y, out, "--resume", "--steps", 3)]) == 2
    one_line_error(capsys, *words)


def test_resume_of_a_checkpoint_older_than_a_setting_takes_its_default(tmp_path):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(train_args(x, y, out, "--steps", 3)) == 0
    state = torch.load(state_path(out), weights_only=True)
    del state["config"]["precision"]  # as written before TrainConfig had it
    state["step"] = 2
    torch.save(state, state_path(out))
    assert run(train_args(x, y, out, "--steps", 3, "--resume")) == 0
    assert torch.load(state_path(out), weights_only=True)["config"]["precision"] == "fp32"


def test_resume_with_labels_of_another_class_count(tmp_path, capsys):
    x, y = small_data(tmp_path)
    out = tmp_path / "m.safetensors"
    assert run(train_args(x, y, out)) == 0
    np.save(tmp_path / "y7.npy", np.eye(7)[np.arange(24) % 7])
    capsys.readouterr()
    assert run(train_args(x, tmp_path / "y7.npy", out, "--resume", "--steps", 3)) == 2
    one_line_error(capsys, "do not fit", "class count")


def test_a_diverged_run_without_checkpoint_does_not_claim_one(tmp_path, monkeypatch):
    x, y = small_data(tmp_path)
    monkeypatch.setattr(train_module, "diffusion_loss", lambda *a, **k: torch.tensor(float("inf"), requires_grad=True))
    with pytest.raises(SpriteDiffError, match="no checkpoint was written"):
        run_training(TrainConfig(steps=5, batch=8, n_feat=8), load_data(x, y), tmp_path / "m.safetensors",
                     torch.device("cpu"), ckpt_every=100, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]  # no log of a run that never was


# --- eval and bench -----------------------------------------------------------------------------------------------

def test_eval_refuses_labels_of_another_class_count(tiny_model_path, tmp_path, capsys):
    x, _ = small_data(tmp_path)
    np.save(tmp_path / "y7.npy", np.eye(7)[np.arange(24) % 7])
    assert run(["eval", "--model", tiny_model_path, "--data", x, "--labels", tmp_path / "y7.npy", "--context", "data",
                "--samplers", "ddim:2", "--n", 4, "--out", tmp_path / "e"]) == 2
    one_line_error(capsys, "--labels have 7 classes but the model takes 5")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("args, words", [
    (["--seed", "-1"], ["--seed"]),
    (["--guidance", "inf"], ["--guidance", "finite"]),
    (["--samplers", "ddim:2:eta=nan"], ["eta must be a finite number"]),
])
def test_eval_refuses_bad_numbers(tiny_model_path, tmp_path, capsys, args, words):
    x, _ = small_data(tmp_path)
    argv = ["eval", "--model", tiny_model_path, "--data", x, "--samplers", "ddim:2", "--n", 4, "--out", tmp_path / "e"]
    assert run([*argv, *args]) == 2
    one_line_error(capsys, *words)


def test_bench_api_refuses_bad_counts():
    from spritediff.bench import bench

    with pytest.raises(SpriteDiffError, match="repeat must be at least 1"):
        bench(tiny_model(), "ddim:2", n=2, repeat=0)
    with pytest.raises(SpriteDiffError, match="n must be an integer"):
        bench(tiny_model(), "ddim:2", n=2.5)


# --- bounded memory -----------------------------------------------------------------------------------------------

def test_sampling_runs_in_batches_and_keeps_frames_of_the_first_sprites_only(monkeypatch):
    seen = []
    ddim = SAMPLERS["ddim"]

    def spy(eps_fn, x_T, schedule, **kwargs):
        seen.append(len(x_T))
        return ddim(eps_fn, x_T, schedule, **kwargs)

    import spritediff.samplers.ddim as ddim_module

    monkeypatch.setattr(ddim_module, "sample_ddim", spy)  # what REGISTRY["ddim"].fn resolves to
    monkeypatch.setitem(sampling.BATCH_SIZE, "cpu", 7)
    result = spritediff.sample(tiny_model(), "ddim", steps=3, n=30, frames=5)
    assert seen == [7, 7, 7, 7, 2]  # the default batch size of the device, never all n at once
    assert len(result.frames) == 3 and all(a.shape[0] == 5 and b.shape[0] == 5 for a, b in result.frames)
    whole = spritediff.sample(tiny_model(), "ddim", steps=3, n=30, batch_size=30, frames=False)
    assert np.abs(result.images.astype(int) - whole.images.astype(int)).max() <= 1 and whole.frames == []


def test_samples_are_written_into_a_memory_mapped_file(tmp_path):
    from numpy.lib.format import open_memmap

    images = open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.uint8, shape=(9, 16, 16, 3))
    result = spritediff.sample(tiny_model(), "ddim", steps=2, n=9, batch_size=4, out=images)
    assert result.images is images
    images.flush()
    del images, result
    again = spritediff.sample(tiny_model(), "ddim", steps=2, n=9, batch_size=4)
    assert np.array_equal(np.load(tmp_path / "s.npy"), again.images) and again.images.any()


def test_gif_is_capped_and_optional(tiny_model_path, tmp_path):
    assert run(["sample", "--model", tiny_model_path, "--n", 40, "--steps", 2, "--gif-n", 3, "--nrow", 3,
                "--out", tmp_path / "a"]) == 0
    gif = Image.open(tmp_path / "a" / "denoise.gif")
    assert gif.size[0] == 4 * (2 * (3 * 17 + 1) + 4)  # 3 sprites a row, x_t and x0_hat side by side
    assert gif.size[1] == 4 * (17 + 1)  # one row: only the first 3 sprites
    assert np.load(tmp_path / "a" / "samples.npy").shape == (40, 16, 16, 3)
    assert run(["sample", "--model", tiny_model_path, "--n", 4, "--steps", 2, "--no-gif", "--out", tmp_path / "b"]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["grid.png", "run.json", "samples.npy"]
    assert json.loads((tmp_path / "b" / "run.json").read_text())["gif_n"] == 0


@pytest.mark.parametrize("make, reason", [
    (lambda path: Image.new("RGB", (16, 16)).save(path, format="PNG"), "not a .npy file at all"),
    (lambda path: np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True), "holds Python objects"),
])
def test_data_that_is_not_a_plain_npy_names_why_without_numpys_unsafe_advice(tmp_path, capsys, make, reason):
    data = tmp_path / "data.npy"
    make(data)
    assert run(["train", "--data", data, "--out", tmp_path / "m.safetensors", "--steps", 1]) == 2
    err = one_line_error(capsys, reason, "folder of images")
    assert "allow_pickle" not in err and not (tmp_path / "m.safetensors").exists()
