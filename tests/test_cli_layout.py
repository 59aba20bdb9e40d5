"""The command line's layering (cli.py is the face: nothing imports it back) and its --version and
--sampler spec strings."""
import ast
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

import spritediff
from conftest import run

from spritediff.cli import main
from spritediff.samplers import SAMPLERS

PACKAGE = Path(spritediff.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """The absolute names of the modules that the source file at path imports (relative imports resolved;
    `from X import name` counts as X and X.name, since name may be a submodule)."""
    parts = ("spritediff", *path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_imported_modules_resolves_relative_imports():
    found = imported_modules(PACKAGE / "features" / "cli.py")
    assert "spritediff.features.files" in found and "spritediff.errors" in found
    assert "spritediff.cli" not in found  # `from ..errors` is not `from ..cli`


def test_no_module_but_main_imports_the_cli():
    """cli.py imports the subcommand modules; they take their shared helpers from leaf modules
    (arguments, outputs, interrupts), never back from cli."""
    importers = [str(path.relative_to(PACKAGE)) for path in package_modules()
                 if "spritediff.cli" in imported_modules(path)]
    assert importers == ["__main__.py"]


@pytest.mark.parametrize("leaf", ["arguments", "outputs", "interrupts", "sprites", "provenance", "errors", "checks"])
def test_shared_helper_modules_are_leaves(leaf):
    """The shared helpers import nothing from the command modules (only errors, interrupts, fast, specs, checks)."""
    allowed = {"spritediff.errors", "spritediff.interrupts", "spritediff.fast", "spritediff.specs", "spritediff.checks"}
    found = {name for name in imported_modules(PACKAGE / f"{leaf}.py") if name.startswith("spritediff.")}
    assert {name.rsplit(".", 1)[0] if name.rsplit(".", 1)[0] in allowed else name for name in found} <= allowed


def test_data_flows_one_way_from_data_to_checkpoint():
    assert not any(name.startswith("spritediff.checkpoint") for name in imported_modules(PACKAGE / "data.py"))


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"spritediff {version('spritediff')}\n"


def test_sample_help_lists_every_sampler(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in SAMPLERS) and "ddim:20:eta=1" in text


def sample_files(model, out: Path, *args) -> tuple[np.ndarray, dict]:
    assert run(["sample", "--model", model, "--n", 3, "--no-gif", *args, "--out", out]) == 0
    return np.load(out / "samples.npy"), json.loads((out / "run.json").read_text())


@pytest.mark.parametrize("spec,flags", [
    ("ddim:3:eta=1", ["--sampler", "ddim", "--steps", 3, "--eta", 1]),
    ("ddim:3", ["--sampler", "ddim", "--steps", 3]),
    ("DDPM:4:variance=posterior", ["--sampler", "ddpm", "--steps", 4, "--variance", "posterior"]),
    ("dpmpp-3m:lower_order_final=1", ["--sampler", "dpmpp-3m", "--lower-order-final", 1]),
])
def test_a_spec_samples_as_its_flags_do(tiny_model_path, tmp_path, spec, flags):
    images, record = sample_files(tiny_model_path, tmp_path / "spec", "--sampler", spec)
    expected, expected_record = sample_files(tiny_model_path, tmp_path / "flags", *flags)
    np.testing.assert_array_equal(images, expected)
    drop = ("seconds", "images_per_second")
    assert {k: v for k, v in record.items() if k not in drop} == \
        {k: v for k, v in expected_record.items() if k not in drop}


def test_a_spec_without_steps_takes_steps_from_the_flag(tiny_model_path, tmp_path):
    _, record = sample_files(tiny_model_path, tmp_path / "o", "--sampler", "ddim:eta=1", "--steps", 2)
    assert record["sampler"] == "ddim" and record["steps"] == 2 and record["nfe"] == 2 and record["eta"] == 1


@pytest.mark.parametrize("args,message", [
    (["--sampler", "ddim:20", "--steps", "10"], "--steps 10 and --sampler ddim:20 both set the steps; give one"),
    (["--sampler", "ddim:20", "--steps", "20"], "both set the steps"),  # even when they agree
    (["--sampler", "ddim:eta=1", "--eta", "0"], "--eta 0 and --sampler ddim:eta=1 both set eta; give one"),
    (["--sampler", "dpmpp-3m:lower_order_final=1", "--lower-order-final", "0"], "both set lower_order_final"),
    (["--sampler", "ddim:20:order=2"], "ddim has no option 'order'"),
    (["--sampler", "ddim:twenty"], "steps 'twenty' in spec 'ddim:twenty' is not an integer"),
    (["--sampler", "ddim:501"], "steps must be between 1 and T=500, got 501 in spec 'ddim:501'"),
    (["--sampler", "ddim:0"], "steps must be between 1 and T=500, got 0 in spec 'ddim:0'"),
    (["--sampler", "nope:20"], "unknown sampler 'nope'"),
    (["--sampler", "heun:eta=0"], "heun has no option 'eta'"),
    (["--sampler", "ddim:20", "--order", "2"], "ddim takes no option order"),
])
def test_conflicting_or_bad_specs_exit_2_with_one_line(tiny_model_path, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run(["sample", "--model", tiny_model_path, *args, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("command", ["sample", "train", "bench", "eval", "invert", "interpolate", "edit", "serve",
                                     "distill"])
def test_every_command_declares_device_the_one_way(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "cpu, cuda, cuda:K or auto (default cpu)" in " ".join(capsys.readouterr().out.split())


LIGHT_MODULES = ["checks.py", "defaults.py", "errors.py", "arguments.py", "specs.py", "samplers/registry.py",
                 "samplers/__init__.py", "train_config.py", "train_cli.py", "bench_cli.py", "latent_cli.py",
                 "evaluate.py", "features/__init__.py", "features/config.py", "features/cli.py", "cli.py",
                 "__init__.py", "serve/cli.py", "serve/config.py", "outputs.py", "interrupts.py", "sprites.py",
                 "distill_config.py", "distill_cli.py", "student.py"]


@pytest.mark.parametrize("path", LIGHT_MODULES)
def test_the_modules_that_help_and_argument_checks_need_import_no_torch_at_the_top(path):
    tree = ast.parse((PACKAGE / path).read_text())
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name for node in top if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in top if isinstance(node, ast.ImportFrom) and not node.level}
    assert not {name.split(".")[0] for name in names} & {"torch", "numpy", "PIL", "tqdm"}, path


COMMAND_NAMES = ["sample", "convert", "train", "bench", "train-features", "eval", "invert", "interpolate", "edit",
                 "serve", "distill"]


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMAND_NAMES),
                                  ["sample", "--steps", "x"], ["sample", "--sampler", "ddim:2:eta=5", "--out", "o"],
                                  ["bench", "--precision", "fp16"], ["distill", "--prediction", "eps"],
                                  ["nosuchcommand"]])
def test_help_and_argument_errors_do_not_import_torch(argv, tmp_path):
    """`spritediff --help`, a command's --help and its argument errors are instant: no torch, numpy or PIL."""
    import subprocess
    import sys

    code = ("import sys; from spritediff.cli import main\n"
            "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'PIL', 'tqdm'})\n"
            "print('HEAVY', heavy, code, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert "HEAVY [] " in done.stderr, done.stderr
    assert done.stderr.strip().endswith("0" if "--help" in argv else "2")
    assert not (tmp_path / "o").exists()
