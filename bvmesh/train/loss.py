"""Training losses: the paper's stabilised class-balanced cross entropy, and Dice + CE.

Both take logits (N, K+1, H, W) and a one-hot (or soft) target of the same shape and
work per class channel on the softmax probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

#: The paper's constants (method.txt, eq. 1-2): p' = a p + b, zero loss within t of the target.
PAPER_A, PAPER_B, PAPER_T = 0.999, 0.0005, 0.02


def stabilised_bce(p: torch.Tensor, g: torch.Tensor, *, a: float = PAPER_A, b: float = PAPER_B,
                   t: float = PAPER_T) -> torch.Tensor:
    """Pixel losses of eq. (1) for probabilities ``p`` and binary targets ``g`` (same shape).

    p' = a p + b keeps the logarithm away from 0; a pixel whose p' lies within t of its
    target costs nothing, which stops background pixels that are already right from
    dominating the sum (the paper's class balancing).
    """
    q = a * p + b
    positive = (g > 0.5) & (q <= 1 - t)
    negative = (g <= 0.5) & (q >= t)
    zero = torch.zeros_like(q)
    return torch.where(positive, -torch.log(q), zero) + torch.where(negative, -torch.log1p(-q), zero)


def paper_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of eq. (1) over pixels and class channels (background included), mean over the batch.

    The paper adds pixel losses "to work with a total loss"; the sum is divided by the
    pixel count of one channel so that the scale does not depend on the image size.
    """
    p = torch.softmax(logits, 1)
    per_pixel = stabilised_bce(p, target)
    return per_pixel.sum(1).mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice over foreground classes (per sample) + cross entropy: the usual strong baseline."""
    logp = torch.log_softmax(logits, 1)
    ce = -(target * logp).sum(1).mean()
    p = logp.exp()[:, 1:]
    g = target[:, 1:]
    inter = (p * g).sum((2, 3))
    dice = (2 * inter + eps) / (p.sum((2, 3)) + g.sum((2, 3)) + eps)
    return ce + (1 - dice).mean()


LOSSES = {"paper": paper_loss, "dice-ce": dice_ce_loss}


def multiscale(loss_fn: Callable, outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """The loss at every scale, against the target averaged down to that scale."""
    total = outputs[0].new_zeros(())
    for out in outputs:
        size = out.shape[-1]
        t = target if target.shape[-1] == size else F.interpolate(
            target.flatten(0, -4) if target.dim() > 4 else target, size=(size, size), mode="area"
        ).view(*target.shape[:-2], size, size)
        total = total + loss_fn(out.flatten(0, -4), t.flatten(0, -4))
    return total
