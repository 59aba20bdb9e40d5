"""spritediff: diffusion models on small images. Sprites by ElvGames, FrootsnVeggies and kyrise.

    import spritediff
    model = spritediff.load()                       # the default sprite model, or load(path)
    result = spritediff.sample(model, sampler="ddim", steps=20, n=32, context="hero", seed=0)
    result.grid(); result.save_gif("denoise.gif"); result.images  # (32, 16, 16, 3) uint8
    spritediff.invert(model, images), spritediff.interpolate(model, seeds=(1, 2)), spritediff.edit(model, image)
"""
__version__ = "0.1.1"
__all__ = ["load", "sample", "save_model", "SpriteModel", "SampleResult", "Schedule", "SpriteDiffError", "CREDIT",
           "invert", "interpolate", "edit", "InversionResult", "InterpolationResult", "EditResult"]

_LAZY = {  # public name -> its module; imported on first use, so `spritediff --help` does not load torch
    "load": ("checkpoint", "load_model"), "save_model": ("checkpoint", "save_model"),
    "SpriteModel": ("checkpoint", "SpriteModel"), "SpriteDiffError": ("errors", "SpriteDiffError"),
    "EditResult": ("latent.api", "EditResult"), "InterpolationResult": ("latent.api", "InterpolationResult"),
    "InversionResult": ("latent.api", "InversionResult"), "edit": ("latent.api", "edit"),
    "interpolate": ("latent.api", "interpolate"), "invert": ("latent.api", "invert"),
    "SampleResult": ("engine", "SampleResult"), "sample": ("sampling", "sample"), "Schedule": ("schedule", "Schedule"),
    "CREDIT": ("sprites", "CREDIT"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
