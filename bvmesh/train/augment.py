"""Training augmentation on batches of slices, in torch, image and labels together.

Stands in for the paper's synthetic motion sequences: random rotation (any angle),
flips, scaling, shifts and smooth elastic warps; per-slice misalignment (breath-hold
differences between slices); gamma, smooth bias field, contrast. The network's own
noise layers add Gaussian and salt-and-pepper noise. ``appearance`` adds what differs
between vendors and sites on top (resolution, blur, Rician noise, intensity windows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _theta(n: int, gen: torch.Generator, *, scale: tuple[float, float], shift: float,
           crop: float) -> torch.Tensor:
    angle = torch.rand(n, generator=gen) * 2 * math.pi
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * s * crop, torch.sin(angle) * s * crop
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * shift
    return torch.stack([torch.stack([cos * flip, -sin, t[:, 0]], 1),
                        torch.stack([sin * flip, cos, t[:, 1]], 1)], 1)


def _smooth_field(n: int, channels: int, size: int, gen: torch.Generator, knots: int = 5):
    coarse = torch.randn(n, channels, knots, knots, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)


def warp(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, *, out: int = 128,
         scale: tuple[float, float] = (0.85, 1.2), shift_px: float = 12.0, elastic: float = 0.015,
         misalign_px: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random geometric transform of ``images`` (N, L, H, W) and ``labels`` (N, L, C, H, W).

    One transform per sample for all L slices, plus an independent shift per slice of up
    to ``misalign_px`` (slice 0 stays put). Output crops are ``out`` x ``out``.
    """
    n, depth, size = images.shape[0], images.shape[1], images.shape[-1]
    crop = out / size
    theta = _theta(n, gen, scale=scale, shift=shift_px * 2 / size, crop=crop)
    grid = F.affine_grid(theta, [n, 1, out, out], align_corners=False)
    grid = grid + elastic * _smooth_field(n, 2, out, gen).permute(0, 2, 3, 1)
    grid = grid.unsqueeze(1).expand(n, depth, out, out, 2).clone()
    if misalign_px > 0 and depth > 1:
        jitter = (torch.rand(n, depth, 1, 1, 2, generator=gen) * 2 - 1) * misalign_px * 2 / size
        jitter[:, 0] = 0
        grid = grid + jitter
    grid = grid.reshape(n * depth, out, out, 2)
    img = F.grid_sample(images.reshape(n * depth, 1, size, size), grid, mode="bilinear",
                        padding_mode="border", align_corners=False).view(n, depth, out, out)
    c = labels.shape[2]
    lab = F.grid_sample(labels.reshape(n * depth, c, size, size), grid, mode="bilinear",
                        padding_mode="border", align_corners=False).view(n, depth, c, out, out)
    return img, lab


def intensity(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gamma, smooth multiplicative bias field and contrast, the same for a sample's slices."""
    n = images.shape[0]
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.4)
    bias = torch.exp(0.15 * _smooth_field(n, 1, images.shape[-1], gen, knots=4))
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    out = images.clamp(0, 1) ** gamma * bias * contrast
    return out.clamp(0, 1.2)


def appearance(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Scanner and site appearance, per sample (the same for a sample's slices).

    Each effect is drawn with probability 1/2: a coarser in-plane resolution (the slices
    are sampled at about 1 mm in training, and scanners acquire at 0.7 to 2.0 mm: area
    downsampling by 1 to 2 and bilinear back), a Gaussian blur, Rician noise (magnitude
    images: sigma up to 6 % of the range), a saturating window (int16 files exported with a
    narrow window) and a stronger gamma curve.
    """
    n, size = images.shape[0], images.shape[-1]
    u = torch.rand(n, 5, generator=gen)
    out = []
    for i in range(n):
        x = images[i:i + 1]
        if u[i, 0] < 0.5:
            small = max(8, int(round(size / (1 + u[i, 0].item() * 2))))
            x = F.interpolate(F.interpolate(x, size=(small, small), mode="area"),
                              size=(size, size), mode="bilinear", align_corners=False)
        if u[i, 1] < 0.5:
            x = _blur(x, 0.5 + 2 * u[i, 1].item())
        if u[i, 2] < 0.5:
            sigma = 0.12 * u[i, 2].item()
            noise = torch.randn(2, *x.shape, generator=gen) * sigma
            x = torch.sqrt((x + noise[0]) ** 2 + noise[1] ** 2)
        if u[i, 3] < 0.5:
            x = (x / (0.6 + 0.8 * u[i, 3].item())).clamp(0, 1)
        if u[i, 4] < 0.5:
            x = x.clamp_min(0) ** (0.5 + 2 * u[i, 4].item())
        out.append(x)
    return torch.cat(out).clamp(0, 1.2)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, L, H, W) slices, sigma in pixels."""
    r = int(math.ceil(2.5 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    depth = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(depth, 1, 1, -1),
                 groups=depth)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(depth, 1, -1, 1),
                    groups=depth)


def degrade_mask(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Make a ground-truth mask look like a network's prediction: soft edges, small shifts.

    At inference the propagation network receives its own (imperfect, soft) output, not
    the manual label it sees in training.
    """
    n, c, size, _ = mask.shape
    theta = _theta(n, gen, scale=(0.96, 1.04), shift=2.0 * 2 / size, crop=1.0)
    angle_free = theta.clone()
    # keep orientation: only a small scale and shift, no rotation or flip
    s = torch.sqrt(theta[:, 0, 0] ** 2 + theta[:, 1, 0] ** 2)
    angle_free[:, :, :2] = torch.diag_embed(torch.stack([s, s], 1))
    grid = F.affine_grid(angle_free, [n, c, size, size], align_corners=False)
    grid = grid + 0.01 * _smooth_field(n, 2, size, gen).permute(0, 2, 3, 1)
    out = F.grid_sample(mask, grid, mode="bilinear", padding_mode="border", align_corners=False)
    blur = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    out = torch.where(blur, F.avg_pool2d(out, 5, 1, 2, count_include_pad=False), out)
    return out / out.sum(1, keepdim=True).clamp_min(1e-6)
