"""Sampler specs: "name:steps[:key=value...]" parsing and its one-line errors."""
import pytest

from spritediff.errors import SpriteDiffError
from spritediff.samplers import SAMPLERS
from spritediff.specs import SamplerSpec, parse_sampler_specs, sampler_options


def test_parses_the_labs_comparison():
    specs = parse_sampler_specs("ddpm:500,ddim:20")
    assert specs == [SamplerSpec("ddpm", 500, {}), SamplerSpec("ddim", 20, {})]
    assert [s.label for s in specs] == ["ddpm-500", "ddim-20"]


def test_options_are_typed_by_the_samplers_defaults():
    eta, variance = parse_sampler_specs(" ddim:20:eta=1 , ddpm:100:variance=posterior ")
    assert eta.options == {"eta": 1.0} and isinstance(eta.options["eta"], float)
    assert variance.options == {"variance": "posterior"}
    assert eta.label == "ddim-20-eta=1" and str(eta) == "ddim:20:eta=1"
    assert variance.label == "ddpm-100-variance=posterior"


def test_several_options_and_default_steps():
    spec, = parse_sampler_specs("ddim:10:eta=0.5:spacing=leading")
    assert spec.options == {"eta": 0.5, "spacing": "leading"}
    ddim, ddpm = parse_sampler_specs("ddim,DDPM", T=300)
    assert (ddim.steps, ddpm.steps, ddpm.name) == (20, 300, "ddpm")


def test_every_registered_sampler_parses():
    for name in SAMPLERS:
        spec, = parse_sampler_specs(f"{name}:3")
        assert (spec.name, spec.steps, spec.label) == (name, 3, f"{name}-3")
        assert "steps" not in sampler_options(name) and "callback" not in sampler_options(name)


def test_unknown_sampler_lists_the_registry():
    with pytest.raises(SpriteDiffError) as info:
        parse_sampler_specs("ddpm:500,dim:20")
    assert all(name in str(info.value) for name in SAMPLERS)


def test_steps_are_checked_against_T():
    assert parse_sampler_specs("ddim:1,ddpm:20", T=20)[1].steps == 20
    with pytest.raises(SpriteDiffError, match="between 1 and T=20"):
        parse_sampler_specs("ddim:21", T=20)


@pytest.mark.parametrize("text, message", [
    ("foo:3", "unknown sampler 'foo'.*known samplers: "),
    ("ddim:x", "is not an integer"),
    ("ddim:2.5", "is not an integer"),
    ("ddim:0", "between 1 and T=500"),
    ("ddpm:501", "between 1 and T=500"),
    ("ddim:20:eta", "write key=value"),
    ("ddim:20:zeta=1", "ddim has no option 'zeta'.*its options: .*eta"),
    ("ddim:20:steps=3", "ddim has no option 'steps'"),
    ("ddim:20:eta=abc", "eta must be a finite number"),
    ("ddim:20:eta=-1", "eta must be between 0 and 1"),
    ("ddim:20:eta=nan", "eta must be a finite number"),
    ("unipc:5:order=4", "unknown order 4; choose from 1, 2, 3"),
    ("unipc:5:corrector=maybe", "corrector must be true or false"),
    ("ddpm:10:variance=foo", "unknown variance 'foo'"),
    ("ddim:20:spacing=odd", "unknown spacing 'odd'"),
    ("ddim:20:eta=1:eta=0", "given twice"),
    ("", "no sampler specs given"),
    ("ddim:20,,ddpm:3", "empty sampler spec"),
])
def test_bad_specs_raise_one_line(text, message):
    with pytest.raises(SpriteDiffError, match=message) as info:
        parse_sampler_specs(text)
    assert "\n" not in str(info.value)
