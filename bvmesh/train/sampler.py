"""Augmented training batches for each network, drawn from the prepared cases.

- initialisation: a slice from the middle 2/3 of the labelled heart;
- propagation: slice z, its (degraded) mask and slices z+-1..z+-4, towards the base or
  the apex at random, targets the 4 next masks;
- locator: a whole coarse slice, target the heart.
"""

from __future__ import annotations

import numpy as np
import torch

from . import augment
from .data import Prepared


class Sampler:
    """Draws augmented training batches from prepared cases."""

    def __init__(self, data: list[Prepared], seed: int, vendor: bool = False) -> None:
        self.data, self.vendor = data, vendor
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def _look(self, images: torch.Tensor) -> torch.Tensor:
        out = augment.intensity(images, self.gen)
        return augment.appearance(out, self.gen) if self.vendor else out

    def _pick(self) -> Prepared:
        return self.data[self.rng.integers(len(self.data))]

    def init_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, labs = [], []
        for _ in range(n):
            p = self._pick()
            lo, hi = p.apex / 6, 5 * p.apex / 6
            s = int(round(self.rng.uniform(lo, hi)))
            imgs.append(p.image[s:s + 1])
            labs.append(p.onehot[:, s:s + 1].transpose(1, 0, 2, 3))
        img, lab = self._warp(imgs, labs, misalign=0.0)
        return self._look(img), lab[:, 0]

    def prop_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        imgs, labs = [], []
        for _ in range(n):
            p = self._pick()
            depth = p.image.shape[0]
            if self.rng.random() < 0.5:  # towards the apex
                z = int(self.rng.integers(0, max(1, min(p.apex, depth - 5) + 1)))
                idx = np.arange(z, z + 5)
            else:  # towards the base
                z = int(self.rng.integers(min(4, p.apex), p.apex + 1))
                idx = np.arange(z, z - 5, -1)
            idx = np.clip(idx, 0, depth - 1)
            imgs.append(p.image[idx])
            labs.append(p.onehot[:, idx].transpose(1, 0, 2, 3))
        img, lab = self._warp(imgs, labs, misalign=1.5)
        mask = augment.degrade_mask(lab[:, 0], self.gen)
        return self._look(img), mask, lab[:, 1:]

    def locator_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, masks = [], []
        for _ in range(n):
            p = self._pick()
            s = int(self.rng.integers(p.loc_image.shape[0]))
            imgs.append(p.loc_image[s])
            masks.append(p.loc_mask[s])
        img = torch.from_numpy(np.stack(imgs).astype(np.float32))[:, None]
        m = torch.from_numpy(np.stack(masks).astype(np.float32))
        lab = torch.stack([1 - m, m], 1)[:, None]
        img, lab = augment.warp(img, lab, self.gen, out=128, scale=(0.8, 1.25), shift_px=10,
                                elastic=0.0)
        return self._look(img), (lab[:, 0] > 0.5).float()

    def _warp(self, imgs: list, labs: list, misalign: float):
        img = torch.from_numpy(np.stack(imgs).astype(np.float32))
        lab = torch.from_numpy(np.stack(labs).astype(np.float32) / 255.0)
        return augment.warp(img, lab, self.gen, misalign_px=misalign)
