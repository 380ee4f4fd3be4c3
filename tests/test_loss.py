"""The paper's stabilised class-balanced cross entropy (eq. 1-2) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from bvmesh.train.loss import PAPER_A, PAPER_B, PAPER_T, dice_ce_loss, paper_loss, stabilised_bce


def test_paper_constants():
    assert (PAPER_A, PAPER_B, PAPER_T) == (0.999, 0.0005, 0.02)
    assert PAPER_A + 2 * PAPER_B == pytest.approx(1.0)  # the paper's constraint a + 2b = 1


def q(p: float) -> float:
    """p' = a p + b (eq. 2)."""
    return 0.999 * p + 0.0005


# (p, g, expected pixel loss), each computed by hand from eq. (1) with p' = 0.999 p + 0.0005.
CASES = [
    (0.5, 1.0, -math.log(q(0.5))),  # p' = 0.5
    (0.5, 0.0, -math.log(1 - q(0.5))),
    (0.0, 1.0, -math.log(0.0005)),  # p = 0 costs log(1/b) = 7.6, not infinity: the stabilisation
    (1.0, 0.0, -math.log(0.0005)),
    (1.0, 1.0, 0.0),  # p' = 0.9995: |g - p'| < t
    (0.0, 0.0, 0.0),  # p' = 0.0005
    (0.985, 1.0, 0.0),  # p' = 0.984515 > 1 - t: inside the zero band
    (0.975, 1.0, -math.log(q(0.975))),  # p' = 0.974525 <= 1 - t: outside it
    (0.015, 0.0, 0.0),  # p' = 0.015485 < t
    (0.025, 0.0, -math.log(1 - q(0.025))),  # p' = 0.025475 >= t
    (0.2, 1.0, -math.log(q(0.2))),
    (0.9, 0.0, -math.log(1 - q(0.9))),
]


def test_stabilised_bce_matches_eq_1_on_hand_values():
    p = torch.tensor([c[0] for c in CASES], dtype=torch.float64)
    g = torch.tensor([c[1] for c in CASES], dtype=torch.float64)
    expected = torch.tensor([c[2] for c in CASES], dtype=torch.float64)
    torch.testing.assert_close(stabilised_bce(p, g), expected, rtol=1e-10, atol=1e-12)
    assert stabilised_bce(p, g)[2].item() == pytest.approx(7.6009, abs=1e-4)


def test_zero_band_is_exactly_t_wide_around_the_target():
    p = torch.linspace(0, 1, 2001, dtype=torch.float64)
    pp = 0.999 * p + 0.0005
    for target in (0.0, 1.0):
        g = torch.full_like(p, target)
        loss = stabilised_bce(p, g)
        inside = (g - pp).abs() < 0.02
        assert inside.any() and (~inside).any()
        assert torch.all(loss[inside] == 0)
        assert torch.all(loss[~inside] > 0)
        assert torch.isfinite(loss).all()


def test_custom_constants_are_used():
    p, g = torch.tensor([0.5]), torch.tensor([1.0])
    assert stabilised_bce(p, g, a=0.5, b=0.25, t=0.1).item() == pytest.approx(-math.log(0.5 * 0.5 + 0.25))
    # A wide band swallows everything within 0.6 of the target.
    assert stabilised_bce(p, g, t=0.6).item() == 0.0


def one_hot_target(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()


def test_paper_loss_is_zero_for_a_perfect_confident_prediction():
    labels = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    target = one_hot_target(labels, 4)
    logits = (20.0 * target).requires_grad_(True)  # softmax ~ 1 - 6e-9 on the right class
    loss = paper_loss(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)  # nothing pulls an already right pixel
    # Wrong on every pixel: a large loss, the same whatever the image size (mean over pixels).
    wrong = paper_loss(20.0 * target.roll(1, dims=1), target)
    assert wrong.item() > 10
    big = target.repeat(1, 1, 2, 2)
    assert paper_loss(20.0 * big.roll(1, dims=1), big).item() == pytest.approx(wrong.item(), rel=1e-5)


def test_paper_loss_equals_the_sum_of_pixel_losses_over_channels():
    logits = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    target = one_hot_target(torch.randint(0, 4, (3, 8, 8), generator=torch.Generator().manual_seed(2)), 4)
    p = torch.softmax(logits, 1)
    by_hand = stabilised_bce(p, target).sum() / (3 * 8 * 8)
    assert paper_loss(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_dice_ce_is_sane():
    gen = torch.Generator().manual_seed(3)
    target = one_hot_target(torch.randint(0, 3, (2, 16, 16), generator=gen), 3)
    perfect = dice_ce_loss(30.0 * target, target)
    assert 0 <= perfect.item() < 1e-3
    wrong = dice_ce_loss(30.0 * target.roll(1, dims=1), target)
    assert wrong.item() > 10  # CE ~ 30 plus Dice ~ 1
    logits = torch.zeros_like(target, requires_grad=True)
    loss = dice_ce_loss(logits, target)
    # Uniform prediction: CE = log 3; per class Dice = (2 n / 3 + 1) / (256 / 3 + n + 1).
    n = target[:, 1:].sum((2, 3))
    dice = (2 * n / 3 + 1) / (256 / 3 + n + 1)
    assert loss.item() == pytest.approx(math.log(3) + (1 - dice).mean().item(), rel=1e-5)
    loss.backward()
    # The gradient pushes each pixel's logit up on its true class.
    assert torch.all((logits.grad * target).sum(1) < 0)
    # A class absent from both target and prediction counts as perfect, not NaN.
    empty = torch.zeros(1, 3, 8, 8)
    empty[:, 0] = 1
    assert dice_ce_loss(30.0 * empty, empty).item() < 1e-3
