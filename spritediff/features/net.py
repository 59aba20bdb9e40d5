"""The sprite feature net: what FD, KID, precision and recall compare.

Inception features, the usual choice for FID, know nothing of 16x16 pixel art, so the net is trained
on the sprites themselves (spritediff.features.training). A net trained only to name the 5 classes
keeps little but the class: it hardly sees noise, speckle or a wrong palette (docs/metric.md). This
one is trained to tell each sprite from every other (a contrastive objective) as well as to name its
class, and its features are read at every depth: plain pixel statistics (colour, contrast, the size of
steps between neighbouring pixels, how much is background), the per-channel mean and spread of each
conv stage (texture, speckle, edges), and the final embedding (shape and class).
"""
from __future__ import annotations

import torch
from torch import nn

N_STAGES = 3
BACKGROUND = -0.8  # a pixel whose brightest channel is below this (in [-1, 1]) counts as background


def pixel_statistics(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) in [-1,1] -> (B, 4C+1): per channel the mean, the standard deviation and the mean
    absolute step to the right and to the lower neighbour, then the fraction of background pixels.
    Speckle and noise raise the steps; a wrong palette moves the means; blur lowers the steps."""
    step_x = (x[..., 1:] - x[..., :-1]).abs().mean((2, 3))
    step_y = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((2, 3))
    background = (x.amax(1) < BACKGROUND).float().mean((1, 2))
    return torch.cat((x.mean((2, 3)), x.std((2, 3)), step_x, step_y, background[:, None]), 1)


def conv_stage(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    """[2x2 max-pool] -> 3x3 conv -> ReLU -> 3x3 conv -> ReLU."""
    layers = [nn.MaxPool2d(2)] if pool else []
    return nn.Sequential(*layers, nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU())


class SpriteFeatureNet(nn.Module):
    """(B,C,H,H) float in [-1,1] -> feature blocks, class logits and a contrastive projection.

    Stages at H, H/2 and H/4 with width, 2 width and 4 width channels; the embedding is a linear map
    of the last stage's (4 width, H/4, H/4) map to n_features. Feature blocks: the pixel statistics
    (4C+1 values), for each stage the per-channel spatial mean and standard deviation (2 width,
    4 width, 8 width values), then the embedding. `features` centres them on the real sprites and scales each block so that its
    covariance over the real sprites has trace 1 (buffers set by `standardize`): every block weighs
    the same, and FD is in units of the real sprites' own spread.
    """

    def __init__(self, n_classes: int = 5, width: int = 32, n_features: int = 128, height: int = 16,
                 in_channels: int = 3, projection: int = 64):
        super().__init__()
        if height % 4 or height < 8:
            raise ValueError(f"height must be a multiple of 4 and at least 8, got {height}")
        self.n_classes, self.width, self.n_features = n_classes, width, n_features
        self.height, self.in_channels, self.projection_size = height, in_channels, projection
        widths = [width * 2 ** i for i in range(N_STAGES)]
        self.stages = nn.ModuleList(conv_stage(c_in, c_out, pool=i > 0)
                                    for i, (c_in, c_out) in enumerate(zip([in_channels] + widths, widths)))
        self.to_features = nn.Linear(widths[-1] * (height // 4) ** 2, n_features)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(n_features, n_classes))
        self.projection = nn.Sequential(nn.ReLU(), nn.Linear(n_features, n_features), nn.ReLU(),
                                        nn.Linear(n_features, projection))
        self.block_sizes = (4 * in_channels + 1,) + tuple(2 * w for w in widths) + (n_features,)
        self.register_buffer("feature_mean", torch.zeros(sum(self.block_sizes)))
        self.register_buffer("block_scale", torch.ones(len(self.block_sizes)))

    @property
    def feature_dim(self) -> int:
        return sum(self.block_sizes)

    def config(self) -> dict:
        return {"arch": "SpriteFeatureNet", "n_classes": self.n_classes, "width": self.width,
                "n_features": self.n_features, "height": self.height, "in_channels": self.in_channels,
                "projection": self.projection_size}

    def blocks(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B,C,H,H) -> ([(B,4C+1), (B,2w), (B,4w), (B,8w), (B,n_features)] raw feature blocks,
        (B,n_features) embedding)."""
        out = [pixel_statistics(x)]
        for stage in self.stages:
            x = stage(x)
            out.append(torch.cat((x.mean((2, 3)), x.std((2, 3))), 1))
        embedding = self.to_features(x.flatten(1))
        return out + [embedding], embedding

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,H) -> (B,n_features), the layer before the class head and the projection."""
        return self.blocks(x)[1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,H) float in [-1,1] -> (B,feature_dim) standardised blocks, what the metrics compare."""
        raw = torch.cat(self.blocks(x)[0], 1)
        scale = torch.repeat_interleave(self.block_scale, torch.tensor(self.block_sizes, device=x.device))
        return (raw - self.feature_mean) / scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B,C,H,H) float in [-1,1] -> (B,n_classes) logits."""
        return self.head(self.embed(x))

    @torch.no_grad()
    def standardize(self, x: torch.Tensor) -> None:
        """Set the centre and the per-block scales from real images x (B,C,H,H) float in [-1,1]."""
        raw = torch.cat([torch.cat(self.blocks(chunk)[0], 1) for chunk in x.split(1024)])
        self.feature_mean.copy_(raw.mean(0))
        variances = raw.var(0).split(self.block_sizes)
        self.block_scale.copy_(torch.stack([v.sum().sqrt().clamp_min(1e-8) for v in variances]))
