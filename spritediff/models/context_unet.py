"""The course's ContextUnet, with its state_dict key names and shapes, made deterministic.

The course's `init_conv` block builds a fresh, randomly initialised 1x1 convolution as its residual
shortcut on every forward call (its channel count changes from 3 to n_feat). Here the shortcut is
the first convolution's output instead, so a forward pass is a function of the weights alone.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..checks import NORMS

RESIDUAL_SCALE = 1.414  # the course divides residual sums by this (about sqrt(2))
GROUPS = 8  # GroupNorm's groups, as the course's own two GroupNorm layers


def norm_layer(channels: int, norm: str) -> nn.Module:
    """BatchNorm2d (running statistics, the course's) or GroupNorm of GROUPS groups (the same in train and eval)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.GroupNorm(GROUPS, channels)


def conv_bn_gelu(in_channels: int, out_channels: int, norm: str = "batch") -> nn.Sequential:
    """3x3 conv (same size) -> norm_layer -> GELU; keys .0 (conv) and .1 (norm)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, 1, 1), norm_layer(out_channels, norm), nn.GELU()
    )


class ResidualConvBlock(nn.Module):
    """Two conv_bn_gelu layers; with is_res, (shortcut + conv2 output) / 1.414.

    The shortcut is the input when channel counts match, else the first conv's output.
    """

    def __init__(self, in_channels: int, out_channels: int, is_res: bool = False, norm: str = "batch"):
        super().__init__()
        self.is_res = is_res
        self.same_channels = in_channels == out_channels
        self.conv1 = conv_bn_gelu(in_channels, out_channels, norm)
        self.conv2 = conv_bn_gelu(out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        if not self.is_res:
            return x2
        shortcut = x if self.same_channels else x1
        return (shortcut + x2) / RESIDUAL_SCALE


class UnetDown(nn.Module):
    """(B,in,H,W) -> (B,out,H/2,W/2): two residual blocks then 2x2 max-pooling."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.model = nn.Sequential(
            ResidualConvBlock(in_channels, out_channels, norm=norm),
            ResidualConvBlock(out_channels, out_channels, norm=norm),
            nn.MaxPool2d(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetUp(nn.Module):
    """cat(x, skip) (B,in,H,W) -> (B,out,2H,2W): 2x2 transposed conv then two residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
            ResidualConvBlock(out_channels, out_channels, norm=norm),
            ResidualConvBlock(out_channels, out_channels, norm=norm),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat((x, skip), 1))


class EmbedFC(nn.Module):
    """(B, input_dim) -> (B, emb_dim): Linear, GELU, Linear. input_dim may be 0 (a model without classes)."""

    def __init__(self, input_dim: int, emb_dim: int):
        super().__init__()
        self.input_dim = input_dim
        with warnings.catch_warnings():  # a (emb_dim, 0) weight has nothing to initialise, which torch warns of
            warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
            self.model = nn.Sequential(nn.Linear(input_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], self.input_dim))  # input_dim 0 (no classes): a learned constant


class ContextUnet(nn.Module):
    """The course's U-Net: HxH -> H/2 -> H/4 -> 1 vector -> back up, time and context embeddings
    multiplied (context) and added (time) at the two upsampling stages. The course's net is H = 16; any
    multiple of 4 works (the pooling and the first up-convolution span H/4), with the same weight keys.

    forward(x (B,C,H,W) in [-1,1], t (B,) or (B,1,1,1) as t/T in [0,1], c (B,n_cfeat) or None)
    returns the predicted noise (B,C,H,W). c = None means the zero vector (no context). C = in_channels:
    3 for RGB (the course's), 4 for RGBA (alpha is one more channel); only init_conv.conv1.0.weight and
    out.3's weight and bias depend on it, so an RGB net keeps the course's keys and shapes.
    norm "group" puts GroupNorm where the course has BatchNorm (the same keys, less its running statistics).
    """

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16,
                 norm: str = "batch"):
        super().__init__()
        if height % 4:
            raise ValueError(f"height must be a multiple of 4, got {height}")
        self.in_channels, self.n_feat, self.n_cfeat, self.height = in_channels, n_feat, n_cfeat, height
        self.norm = norm
        self.init_conv = ResidualConvBlock(in_channels, n_feat, is_res=True, norm=norm)
        self.down1 = UnetDown(n_feat, n_feat, norm)
        self.down2 = UnetDown(n_feat, 2 * n_feat, norm)
        self.to_vec = nn.Sequential(nn.AvgPool2d(height // 4), nn.GELU())  # the course's AvgPool2d(4) at 16x16
        self.timeembed1 = EmbedFC(1, 2 * n_feat)
        self.timeembed2 = EmbedFC(1, n_feat)
        self.contextembed1 = EmbedFC(n_cfeat, 2 * n_feat)
        self.contextembed2 = EmbedFC(n_cfeat, n_feat)
        self.up0 = nn.Sequential(
            nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, height // 4, height // 4),
            nn.GroupNorm(GROUPS, 2 * n_feat),
            nn.ReLU(),
        )
        self.up1 = UnetUp(4 * n_feat, n_feat, norm)
        self.up2 = UnetUp(2 * n_feat, n_feat, norm)
        self.out = nn.Sequential(
            nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1),
            nn.GroupNorm(GROUPS, n_feat),
            nn.ReLU(),
            nn.Conv2d(n_feat, in_channels, 3, 1, 1),
        )

    def config(self) -> dict:
        """What builds this net again (from_config); "norm" only where it is not the course's BatchNorm, so a
        course-architecture file's metadata is as it always was."""
        return {"arch": "ContextUnet", "in_channels": self.in_channels, "n_feat": self.n_feat,
                "n_cfeat": self.n_cfeat, "height": self.height, **({"norm": self.norm} if self.norm != "batch" else {})}

    @classmethod
    def from_config(cls, config: dict, **changes) -> "ContextUnet":
        """A fresh net of config() with the given sizes changed (e.g. n_feat=128)."""
        return cls(**{**{k: v for k, v in config.items() if k != "arch"}, **changes})

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        batch, n_feat = x.shape[0], self.n_feat
        if c is None:
            c = x.new_zeros(batch, self.n_cfeat)
        t = t.to(x.dtype).reshape(-1, 1).expand(batch, 1)
        x = self.init_conv(x)
        down1 = self.down1(x)  # (B, n_feat, H/2, W/2)
        down2 = self.down2(down1)  # (B, 2 n_feat, H/4, W/4)
        hidden = self.to_vec(down2)  # (B, 2 n_feat, 1, 1)
        cemb1 = self.contextembed1(c).view(batch, 2 * n_feat, 1, 1)
        temb1 = self.timeembed1(t).view(batch, 2 * n_feat, 1, 1)
        cemb2 = self.contextembed2(c).view(batch, n_feat, 1, 1)
        temb2 = self.timeembed2(t).view(batch, n_feat, 1, 1)
        up1 = self.up0(hidden)  # (B, 2 n_feat, H/4, W/4)
        up2 = self.up1(cemb1 * up1 + temb1, down2)  # (B, n_feat, H/2, W/2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)  # (B, n_feat, H, W)
        return self.out(torch.cat((up3, x), 1))
