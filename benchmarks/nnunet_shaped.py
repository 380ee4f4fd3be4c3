"""A U-Net shaped like nnU-Net's 2D configuration for ACDC, to time beside bvmesh's networks.

nnU-Net v2's plan for ACDC (Dataset027, configuration "2d"): 7 stages of 32, 64, 128,
256, 512, 512, 512 features, two 3x3 convolutions per stage (instance norm, leaky ReLU),
stride-2 convolutions down, transposed convolutions up, two convolutions per decoder
stage; 33.5 M parameters. Random weights: only its cost is measured, one model, no
test-time mirroring (nnU-Net's default predicts with 5 folds x 4 mirrorings, 20 times this).
"""

from __future__ import annotations

import torch
from torch import nn

FEATURES = (32, 64, 128, 256, 512, 512, 512)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    def conv(a: int, b: int, s: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, 3, stride=s, padding=1), nn.InstanceNorm2d(b, affine=True),
                nn.LeakyReLU(0.01, inplace=True)]

    return nn.Sequential(*conv(c_in, c_out, stride), *conv(c_out, c_out, 1))


class NnUNet2d(nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 4) -> None:
        super().__init__()
        chans = (in_channels, *FEATURES)
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1], 1 if i == 0 else 2)
                                  for i in range(len(FEATURES)))
        self.up = nn.ModuleList(nn.ConvTranspose2d(FEATURES[i + 1], FEATURES[i], 2, stride=2)
                                for i in reversed(range(len(FEATURES) - 1)))
        self.merge = nn.ModuleList(_block(2 * FEATURES[i], FEATURES[i], 1)
                                   for i in reversed(range(len(FEATURES) - 1)))
        self.head = nn.Conv2d(FEATURES[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


def parameters_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6
