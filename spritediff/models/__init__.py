"""Networks. A net maps (x (B,C,H,W), t/T (B,), context (B,n_cfeat)) to predicted noise (B,C,H,W)."""
from .context_unet import ContextUnet

__all__ = ["ContextUnet"]
