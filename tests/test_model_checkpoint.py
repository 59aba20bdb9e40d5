"""ContextUnet compatibility with the course's checkpoints, and the .safetensors model format."""
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save_file

from spritediff.checkpoint import load_model, save_model
from spritediff.cli import main
from spritediff.errors import SpriteDiffError
from spritediff.models import ContextUnet


def course_shapes(n_feat=64, n_cfeat=5, ch=3, h=16) -> dict:
    """Key -> shape of the course's ContextUnet.state_dict(), written from its architecture, not from ours."""
    shapes, nf, nc = {}, n_feat, n_cfeat

    def block(prefix, cin, cout):
        for i, (a, b) in (("1", (cin, cout)), ("2", (cout, cout))):
            shapes[f"{prefix}.conv{i}.0.weight"] = (b, a, 3, 3)
            shapes[f"{prefix}.conv{i}.0.bias"] = (b,)
            for stat in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.conv{i}.1.{stat}"] = (b,)
            shapes[f"{prefix}.conv{i}.1.num_batches_tracked"] = ()

    def linear(prefix, cin, cout):
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (cout, cin), (cout,)

    block("init_conv", ch, nf)
    block("down1.model.0", nf, nf), block("down1.model.1", nf, nf)
    block("down2.model.0", nf, 2 * nf), block("down2.model.1", 2 * nf, 2 * nf)
    for name, cin, cout in (("timeembed1", 1, 2 * nf), ("timeembed2", 1, nf),
                            ("contextembed1", nc, 2 * nf), ("contextembed2", nc, nf)):
        linear(f"{name}.model.0", cin, cout), linear(f"{name}.model.2", cout, cout)
    shapes["up0.0.weight"], shapes["up0.0.bias"] = (2 * nf, 2 * nf, h // 4, h // 4), (2 * nf,)
    shapes["up0.1.weight"] = shapes["up0.1.bias"] = (2 * nf,)
    for name, cin in (("up1", 4 * nf), ("up2", 2 * nf)):
        shapes[f"{name}.model.0.weight"], shapes[f"{name}.model.0.bias"] = (cin, nf, 2, 2), (nf,)
        block(f"{name}.model.1", nf, nf), block(f"{name}.model.2", nf, nf)
    shapes["out.0.weight"], shapes["out.0.bias"] = (nf, 2 * nf, 3, 3), (nf,)
    shapes["out.1.weight"] = shapes["out.1.bias"] = (nf,)
    shapes["out.3.weight"], shapes["out.3.bias"] = (ch, nf, 3, 3), (ch,)
    return shapes


def course_state_dict(seed=0, **sizes) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in course_shapes(**sizes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(123)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def test_parameter_count_and_keys_match_the_course():
    net = ContextUnet(n_feat=64, n_cfeat=5, height=16)
    assert sum(p.numel() for p in net.parameters()) == 1_480_771
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == course_shapes()


def test_course_state_dict_loads_strictly_and_forward_is_deterministic(tmp_path):
    state = course_state_dict()
    path = tmp_path / "context_model_trained.pth"
    torch.save(state, path)
    model = load_model(path)
    assert model.net.n_feat == 64 and model.classes[0] == "hero"
    x, t, c = torch.randn(3, 3, 16, 16), torch.tensor([0.1, 0.5, 0.9]), torch.eye(5)[:3]
    with torch.no_grad():
        first, second = model.net(x, t, c), model.net(x, t, c)
    assert torch.equal(first, second)  # the course's init_conv drew a fresh random conv on every call
    for key, value in state.items():
        assert torch.equal(model.net.state_dict()[key], value)


def test_convert_roundtrip(tmp_path, capsys):
    torch.save(course_state_dict(n_feat=16), tmp_path / "course.pth")
    assert main(["convert", str(tmp_path / "course.pth"), str(tmp_path / "model.safetensors")]) == 0
    a, b = load_model(tmp_path / "course.pth"), load_model(tmp_path / "model.safetensors")
    assert a.config()["net"] == b.config()["net"] and a.classes == b.classes
    for key, value in a.net.state_dict().items():
        assert torch.equal(value, b.net.state_dict()[key]), key


def test_fp16_save_halves_the_file_and_loads_as_float32(tmp_path):
    model = tiny_model(n_feat=16)
    save_model(model, tmp_path / "a.safetensors", torch.float32)
    save_model(model, tmp_path / "b.safetensors", torch.float16)
    size_a, size_b = (tmp_path / "a.safetensors").stat().st_size, (tmp_path / "b.safetensors").stat().st_size
    assert size_b < 0.6 * size_a
    loaded = load_model(tmp_path / "b.safetensors")
    weight = loaded.net.init_conv.conv1[0].weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.net.init_conv.conv1[0].weight, rtol=1e-3, atol=1e-4)


def test_convert_fp16_from_the_cli_stores_float16_and_loads_as_float32(tmp_path):
    """`convert --fp16` writes each float weight as float16 (the source rounded to half), integer buffers as they
    are; without the flag, float32 as in the source. Loading gives float32 either way."""
    from safetensors import safe_open

    state = course_state_dict(n_feat=16)
    torch.save(state, tmp_path / "course.pth")
    half, full = tmp_path / "half.safetensors", tmp_path / "full.safetensors"
    assert main(["convert", str(tmp_path / "course.pth"), str(half), "--fp16"]) == 0
    assert main(["convert", str(tmp_path / "course.pth"), str(full)]) == 0
    for path, dtype in ((half, torch.float16), (full, torch.float32)):
        with safe_open(str(path), framework="pt") as f:
            stored = {key: f.get_tensor(key) for key in f.keys()}
        assert stored.keys() == state.keys()
        for key, value in state.items():
            wanted = value.to(dtype) if value.is_floating_point() else value
            assert stored[key].dtype == wanted.dtype and torch.equal(stored[key], wanted), key
    loaded = load_model(half).net.state_dict()
    weight = "init_conv.conv1.0.weight"
    assert loaded[weight].dtype == torch.float32 and torch.equal(loaded[weight], state[weight].half().float())
    assert half.stat().st_size < 0.6 * full.stat().st_size


def test_metadata_is_json_config(tmp_path):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["spritediff"])
    assert config["net"]["n_feat"] == 8 and config["schedule"]["T"] == 500 and len(config["classes"]) == 5


def bad_files(tmp_path: Path) -> dict:
    """name -> (path, a phrase its error must hold), one for each way a model file can be bad."""
    good = tmp_path / "good.safetensors"
    save_model(tiny_model(), good)
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"not a model at all")
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    (tmp_path / "notdict.pth").write_bytes(b"\x80\x04K\x01.")  # a pickled int
    torch.save({"init_conv.conv1.0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "partial.pth")
    return {"missing": (tmp_path / "nope.safetensors", "not found"),
            "truncated": (tmp_path / "truncated.safetensors", "truncated or corrupt"),
            "garbage": (tmp_path / "garbage.safetensors", "truncated or corrupt"),
            "plain": (tmp_path / "plain.safetensors", "not a spritediff model"),
            "notdict": (tmp_path / "notdict.pth", "state_dict"),
            "partial": (tmp_path / "partial.pth", "not a ContextUnet state_dict")}


@pytest.mark.parametrize("name", ["missing", "truncated", "garbage", "plain", "notdict", "partial"])
def test_bad_model_files_are_one_line_errors(tmp_path, capsys, name):
    """Each bad file is a SpriteDiffError whose message is one line naming the file and what is wrong; the CLI
    prints it as one line on stderr and exits with 2."""
    path, message = bad_files(tmp_path)[name]
    with pytest.raises(SpriteDiffError, match=message) as err:
        load_model(path)
    text = str(err.value)
    assert "\n" not in text and "\r" not in text and path.name in text
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("spritediff: error: ") and message in lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_a_model_of_another_width_is_no_bad_file(tmp_path):
    """A net wider than the default (n_feat 16, not 8) loads with its own width and weights: the width comes
    from the file's metadata, not from an assumption."""
    model = tiny_model(n_feat=16)
    save_model(model, tmp_path / "wide.safetensors")
    wide = load_model(tmp_path / "wide.safetensors")
    assert wide.net.n_feat == 16 and wide.config()["net"] == model.config()["net"]
    for key, value in model.net.state_dict().items():
        assert torch.equal(wide.net.state_dict()[key], value), key


def test_other_shapes_name_the_keys(tmp_path):
    state = course_state_dict(n_feat=16)
    state["out.3.weight"] = torch.zeros(3, 8, 3, 3)
    del state["up0.1.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(SpriteDiffError) as err:
        load_model(tmp_path / "odd.pth")
    text = str(err.value)
    assert "missing: up0.1.bias" in text and "unexpected: extra.weight" in text and "other shapes: out.3.weight" in text


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(SpriteDiffError, match="not a readable course checkpoint: it holds Python objects") as err:
        load_model(tmp_path / "evil.pth")
    assert "weights_only" not in str(err.value) and "unsafe" not in str(err.value).lower()


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04truncated"])
def test_a_foreign_pth_names_what_it_is_not_without_torchs_advice(tmp_path, content):
    (tmp_path / "fake.pth").write_bytes(content)
    with pytest.raises(SpriteDiffError, match="not a PyTorch file, or empty or truncated") as err:
        load_model(tmp_path / "fake.pth")
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


def test_a_folder_given_as_model_is_named_a_folder(tmp_path):
    with pytest.raises(SpriteDiffError, match="is a folder; give a model file"):
        load_model(tmp_path)


def test_saved_models_are_readable_like_other_files(tmp_path):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


@pytest.mark.parametrize("height", [8, 12, 24, 32, 48, 64])
def test_contextunet_runs_at_any_multiple_of_four_with_the_course_keys(height):
    """The course's net is 16x16; other sizes keep its weight keys and shapes, but the first
    up-convolution, whose kernel spans the H/4 x H/4 map that the pooling reduced to one vector."""
    from spritediff.models import ContextUnet

    torch.manual_seed(0)
    net, course = ContextUnet(4, 8, 5, height), ContextUnet(4, 8, 5, 16)
    x = torch.randn(3, 4, height, height)
    assert net(x, torch.rand(3), torch.rand(3, 5)).shape == x.shape
    shapes, course_shapes = ({k: v.shape for k, v in n.state_dict().items()} for n in (net, course))
    assert shapes.keys() == course_shapes.keys()
    assert {k for k in shapes if shapes[k] != course_shapes[k]} == {"up0.0.weight"}
    assert shapes["up0.0.weight"][-2:] == (height // 4, height // 4)


def test_default_by_name_is_the_default_model():
    by_name, unnamed = load_model("default"), load_model()
    assert by_name.path is None and unnamed.path is None
    for key, value in unnamed.net.state_dict().items():
        assert torch.equal(by_name.net.state_dict()[key], value)


def test_the_shipped_student_is_a_four_call_student_of_the_shipped_default():
    """Retraining the default without distilling it again breaks this: the student's recorded teacher is the
    sha256 of the default's weights (spritediff distill --teacher default)."""
    from spritediff.distill import teacher_fingerprint

    student = load_model("distilled")
    assert student.path == "distilled" and student.student is not None
    assert student.student.calls == 4 and student.prediction_type == "v"
    assert student.student.teacher["sha256"] == teacher_fingerprint(load_model())
    assert student.classes == load_model().classes


def test_a_shipped_model_that_is_not_installed_says_so(monkeypatch, tmp_path):
    import spritediff.checkpoint as checkpoint

    monkeypatch.setitem(checkpoint.SHIPPED_MODELS, "distilled", tmp_path / "gone.safetensors")
    with pytest.raises(SpriteDiffError, match="the shipped model 'distilled' is not installed"):
        load_model("distilled")


def test_a_name_that_is_no_shipped_model_nor_file_is_one_line(capsys, tmp_path):
    (tmp_path / "distiled").write_bytes(b"")
    assert main(["sample", "--model", str(tmp_path / "distiled"), "--n", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "distiled" in err and "shipped models default, distilled" in err
    assert not (tmp_path / "out").exists()


def assert_bad_metadata_is_one_line(tmp_path, section: str, key: str, value, message: str) -> None:
    """A tiny model's file with metadata[section][key] = value fails to load with one line holding message."""
    model = tiny_model()
    config = model.config()
    config[section][key] = value
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, path,
              metadata={"spritediff": json.dumps(config)})
    with pytest.raises(SpriteDiffError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value) and "m.safetensors" in str(err.value)


@pytest.mark.parametrize("norm", ["layer", 3, None])
def test_a_bad_norm_in_the_metadata_is_a_one_line_error(tmp_path, norm):
    assert_bad_metadata_is_one_line(tmp_path, "net", "norm", norm, "metadata net.norm must be one of batch, group")


@pytest.mark.parametrize("terminal_snr", [0.5, 0.0, "1e-5", float("nan")])
def test_a_bad_terminal_snr_in_the_metadata_is_a_one_line_error(tmp_path, terminal_snr):
    assert_bad_metadata_is_one_line(tmp_path, "schedule", "terminal_snr", terminal_snr, "metadata schedule")
