"""Training augmentation: image and labels move together, masks stay masks, looks change."""

from __future__ import annotations

import torch

from bvmesh.train import augment


def _disc(size: int = 64, centre=(24.0, 40.0), radius: float = 9.0) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                          torch.arange(size, dtype=torch.float32), indexing="ij")
    return (((y - centre[0]) ** 2 + (x - centre[1]) ** 2) <= radius**2).float()


def test_warp_moves_image_and_labels_together():
    disc = _disc()
    images = torch.stack([disc, disc]).unsqueeze(0)  # (1, 2 slices, 64, 64)
    labels = torch.stack([1 - disc, disc]).unsqueeze(0).unsqueeze(0).expand(1, 2, 2, 64, 64)
    img, lab = augment.warp(images, labels.contiguous(), torch.Generator().manual_seed(3), out=48)
    assert img.shape == (1, 2, 48, 48) and lab.shape == (1, 2, 2, 48, 48)
    # The image is the label drawn in intensity: wherever it went, the label went too.
    torch.testing.assert_close(img[0, 0], lab[0, 0, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(lab.sum(2), torch.ones(1, 2, 48, 48))  # still a partition
    assert 0.5 * disc.sum() < (lab[0, 0, 1] > 0.5).sum() < 2.0 * disc.sum()  # scaled, not lost


def test_misalignment_shifts_later_slices_only():
    disc = _disc()
    images = torch.stack([disc] * 3).unsqueeze(0)
    labels = torch.stack([1 - disc, disc]).expand(1, 3, 2, 64, 64).contiguous()
    still, _ = augment.warp(images, labels, torch.Generator().manual_seed(5), misalign_px=0.0)
    moved, _ = augment.warp(images, labels, torch.Generator().manual_seed(5), misalign_px=3.0)
    torch.testing.assert_close(moved[0, 0], still[0, 0])  # slice 0 stays put
    assert (moved[0, 1:] - still[0, 1:]).abs().sum() > 1.0


def test_intensity_is_reproducible_bounded_and_shared_by_a_samples_slices():
    images = _disc().expand(2, 3, 64, 64).contiguous() * 0.8 + 0.1
    a = augment.intensity(images, torch.Generator().manual_seed(1))
    b = augment.intensity(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.2
    torch.testing.assert_close(a[:, 0], a[:, 2])  # one gamma, bias and contrast per sample
    assert not torch.allclose(a, images)


def test_degraded_mask_is_soft_still_a_partition_and_near_the_truth():
    disc = _disc()
    mask = torch.stack([1 - disc, disc]).unsqueeze(0).repeat(4, 1, 1, 1)
    out = augment.degrade_mask(mask, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.sum(1), torch.ones(4, 64, 64))
    for i in range(4):
        fg = out[i, 1] > 0.5
        overlap = (fg & (disc > 0.5)).sum() / (disc > 0.5).sum()
        assert overlap > 0.7  # a small shift and scale, no rotation: the disc stays put
