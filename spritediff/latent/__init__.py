"""DDIM's latent space: invert images to x_T (approximately or exactly), slerp between latents, SDEdit and
inpainting. The low-level pieces take any eps function, like the samplers; `api` wraps them for SpriteModels.

    from spritediff.latent import invert_ddim, invert_bdia, sample_bdia, slerp, noise_to, inpaint_ddim
"""
from .editing import inpaint_ddim, noise_to, truncated_schedule
from .inversion import ddim_move, invert_bdia, invert_ddim, sample_bdia
from .slerp import lerp, slerp

__all__ = ["invert_ddim", "invert_bdia", "sample_bdia", "ddim_move", "slerp", "lerp", "noise_to",
           "inpaint_ddim", "truncated_schedule"]
