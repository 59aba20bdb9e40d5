"""The one sampling engine: a frozen plan, index ranges with the same per-sample streams, the caller's net left
alone, and the defaults every front-end reads from spritediff.defaults."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from conftest import run, tiny_model

import spritediff
from spritediff import defaults
from spritediff.engine import Engine, SamplePlan
from spritediff.samplers import REGISTRY, SAMPLERS
from spritediff.sampling import plan_sample


def plan_for(model, **changes) -> SamplePlan:
    plan = plan_sample(model, "ddpm", 4, 6, "random", 0.5, 3, "cpu", 4, False, True, "fp32")
    return dataclasses.replace(plan, **changes)


def test_a_plan_is_frozen_and_its_options_read_only():
    plan = plan_sample(tiny_model(), "ddim", 3, 2, None, 0.5, 0, "cpu", None, False, True, "fp32",
                       options={"eta": 0.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.steps = 5
    with pytest.raises(TypeError):
        plan.options["eta"] = 1.0
    assert plan.options == {"eta": 0.5} and plan.batch_size == 2 and plan.start == 0 and plan.stop == 2


def test_an_index_range_draws_the_same_samples_as_the_whole_run():
    """Sample i uses stream (seed, i) whatever range is run: a torchrun rank can sample its share alone."""
    model = tiny_model()
    engine = Engine(model, torch.device("cpu"), fast=True, precision="fp32")
    whole = engine.sample(plan_for(model), np.empty((6, 16, 16, 3), np.uint8)).images
    share = engine.sample(plan_for(model, start=2, n=3, batch_size=2), np.empty((3, 16, 16, 3), np.uint8)).images
    assert np.array_equal(share, whole[2:5])


def test_the_engine_works_on_a_copy_of_the_callers_net():
    model = tiny_model()
    model.net.train()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    Engine(model, torch.device("cpu"), fast=True).sample(plan_for(model), np.empty((6, 16, 16, 3), np.uint8))
    assert model.net.training and all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())


def test_the_registry_is_one_entry_per_sampler_and_samplers_is_its_functions():
    assert list(SAMPLERS) == list(REGISTRY)
    for name, entry in REGISTRY.items():
        assert SAMPLERS[name] is entry.fn and entry.steps_for(500) == (entry.default_steps or 500)
        assert entry.steps_for(5) <= 5


def test_the_python_api_reads_its_defaults_from_the_declaration():
    signature = inspect.signature(spritediff.sample).parameters
    assert signature["sampler"].default == defaults.API_SAMPLE.sampler == "ddim"
    assert signature["steps"].default is defaults.API_SAMPLE.steps is None
    assert signature["context"].default is defaults.API_SAMPLE.context is None
    # guidance None: the model's own, DEFAULT_GUIDANCE for an ordinary model (a student's is tested in test_distill)
    assert signature["guidance"].default is defaults.API_SAMPLE.guidance is defaults.MODEL_GUIDANCE is None
    result = spritediff.sample(tiny_model(), n=1, frames=False)
    assert result.settings["sampler"] == "ddim" and result.settings["steps"] == REGISTRY["ddim"].default_steps
    guided = spritediff.sample(tiny_model(), n=1, frames=False, context="random")
    assert guided.settings["guidance"] == defaults.DEFAULT_GUIDANCE == 0.5


def test_the_cli_samples_its_declared_defaults(tmp_path):
    import json

    model = tiny_model()
    model.class_mix = (0.2, 0.2, 0.2, 0.2, 0.2)
    spritediff.save_model(model, tmp_path / "m.safetensors")
    assert run(["sample", "--model", tmp_path / "m.safetensors", "--n", 2, "--no-gif", "--out", tmp_path / "o"]) == 0
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    cli = defaults.CLI_SAMPLE
    assert cli.guidance is defaults.MODEL_GUIDANCE  # the model's own: DEFAULT_GUIDANCE for an ordinary model
    assert (record["sampler"], record["steps"], record["context"], record["guidance"]) == (
        cli.sampler, cli.steps, cli.context, defaults.DEFAULT_GUIDANCE) == ("ddpm", 50, "mix", 0.5)


def test_eval_and_the_playground_read_their_declared_defaults():
    from spritediff.cli import build_parser
    from spritediff.serve.app import model_info
    from spritediff.serve.config import ServeConfig
    from spritediff.serve.validation import parse_race, parse_sample

    argv = ["eval", "--data", "x.npy", "--samplers", "ddim:2", "--out", "o"]
    args = build_parser(argv).parse_args(argv)
    assert (args.context, args.guidance) == (defaults.EVAL.context, defaults.EVAL.guidance) == (None, None)
    model, config = tiny_model(), ServeConfig()
    info = model_info(model, torch.device("cpu"), config)
    assert info["defaults"]["playground_sample"] == defaults.PLAYGROUND_SAMPLE.public()
    assert info["defaults"]["playground_race"]["context"] is None
    request = parse_sample({}, model, config)
    assert (request.sampler, request.steps) == ("ddim", 20) == (defaults.PLAYGROUND_SAMPLE.sampler,
                                                                 info["samplers"]["ddim"]["default_steps"])
    assert all(lane.context.rows(model, 1, 0) is None for lane in parse_race({}, model, config).lanes)


def test_the_engine_alone_prepares_nets_builds_denoisers_draws_x_T_and_checks_finiteness():
    """Each front-end is an adapter: no module but engine.py calls these (besides the modules that define them)."""
    import ast
    from pathlib import Path

    package = Path(spritediff.__file__).parent
    owned = {"Denoiser": "denoiser.py", "prepare_net": "fast.py", "graphed_or_eager": "fast.py",
             "check_finite": "finite.py", "initial_noise": "engine.py", "batch_ranges": "engine.py"}
    callers: dict[str, set[str]] = {name: set() for name in owned}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in owned and path.name != owned[name]:
                    callers[name].add(str(path.relative_to(package)))
    assert callers == {"Denoiser": {"engine.py"}, "prepare_net": {"engine.py"}, "graphed_or_eager": {"engine.py"},
                       "check_finite": {"engine.py"}, "initial_noise": set(),
                       "batch_ranges": {"latent/api.py"}}
