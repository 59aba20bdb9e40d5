"""spritediff: diffusion models on small images. Sprites by ElvGames, FrootsnVeggies and kyrise.

    import spritediff
    model = spritediff.load()                       # the default sprite model, or load(path)
    result = spritediff.sample(model, sampler="ddim", steps=20, n=32, context="hero", seed=0)
    result.grid(); result.save_gif("denoise.gif"); result.images  # (32, 16, 16, 3) uint8
    spritediff.invert(model, images), spritediff.interpolate(model, seeds=(1, 2)), spritediff.edit(model, image)
"""
from .checkpoint import SpriteModel, load_model as load, save_model
from .errors import SpriteDiffError
from .latent.api import EditResult, InterpolationResult, InversionResult, edit, interpolate, invert
from .sampling import SampleResult, sample
from .schedule import Schedule
from .sprites import CREDIT

__version__ = "0.1.1"
__all__ = ["load", "sample", "save_model", "SpriteModel", "SampleResult", "Schedule", "SpriteDiffError", "CREDIT",
           "invert", "interpolate", "edit", "InversionResult", "InterpolationResult", "EditResult"]
