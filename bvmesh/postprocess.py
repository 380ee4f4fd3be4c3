"""From probabilities to labels: threshold, clean-up, the geometric RV free wall, and the
map back onto the input grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .labels import LABEL_OF, LV_MYO, LV_POOL, RV_MYO, RV_POOL


def threshold(probs: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Labels (bvmesh values) from class probabilities (K+1, ...).

    A voxel is heart when its background probability is below 0.5 (the paper's 0.5
    threshold, which for a myocardium-only model is exactly the paper's rule), and then
    takes its most probable class.
    """
    values = np.array([0] + [LABEL_OF[c] for c in classes], np.uint8)
    labels = values[1 + np.argmax(probs[1:], axis=0)]
    labels[probs[0] >= 0.5] = 0
    return labels


def largest_component(mask: np.ndarray, seed_slice: int | None = None) -> np.ndarray:
    """The largest connected component of ``mask``; with ``seed_slice`` (an index along
    axis 0), the largest of those that reach that slice, where any does."""
    labelled, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labelled, range(1, n + 1))
    if seed_slice is not None and 0 <= seed_slice < len(mask):
        seeded = np.zeros(n + 1, bool)
        seeded[labelled[seed_slice]] = True
        seeded = seeded[1:]  # component k at k - 1; label 0 is the background
        if seeded.any():
            sizes = np.where(seeded, sizes, -1)
    return labelled == (1 + int(np.argmax(sizes)))


def clean(labels: np.ndarray, seed_slice: int | None = None) -> np.ndarray:
    """Largest connected component per structure (3D), and holes filled slice by slice.

    ``seed_slice``: the initialisation slice of a stack (axis 0). Each structure then
    keeps its largest component among those that reach it: the propagation started
    there, and a larger piece elsewhere is a bright organ it ran into (a stomach read as
    cavity beyond the apex outweighed the real LV and RV of a synthetic scan).
    Removed islands become background; a hole inside the LV (pool + myocardium) becomes
    LV blood pool, inside the RV pool it becomes RV pool.
    """
    out = labels.copy()
    for value in (LV_POOL, LV_MYO, RV_POOL, RV_MYO):
        mask = out == value
        if mask.any():
            out[mask & ~largest_component(mask, seed_slice)] = 0
    for pool, wall in ((LV_POOL, (LV_POOL, LV_MYO)), (RV_POOL, (RV_POOL,))):
        region = np.isin(out, wall)
        hole = ndimage.binary_fill_holes(region, structure=_IN_PLANE) & ~region & (out == 0)
        out[hole] = pool
    return out


#: 4-connectivity within a slice (axis 0) and none across slices: filling holes with it
#: fills each slice's own holes, in one call instead of one a slice.
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def add_rv_wall(labels: np.ndarray, spacing_mm: float, thickness_mm: float) -> np.ndarray:
    """The RV free wall as a shell of ``thickness_mm`` around the RV blood pool, outside the LV.

    Used when a model has no RV-myocardium class (ACDC does not label it): the wall is
    geometric, not seen in the image, and reports say so. Works in 3D on the isotropic
    stack, so the wall also closes the RV towards the apex.
    """
    rv = labels == RV_POOL
    if not rv.any() or thickness_mm <= 0:
        return labels
    # The shell lies within thickness_mm of the pool: work in its bounding box only.
    margin = int(np.ceil(thickness_mm / spacing_mm)) + 1
    box = tuple(slice(max(0, int(idx.min()) - margin), int(idx.max()) + margin + 1)
                for idx in np.nonzero(rv))
    dist = ndimage.distance_transform_edt(~rv[box], sampling=spacing_mm)
    shell = (dist > 0) & (dist <= thickness_mm) & (labels[box] == 0)
    out = labels.copy()
    out[box][shell] = RV_MYO
    return out


def one_hot(labels: np.ndarray, n_labels: int = 5) -> np.ndarray:
    return np.stack([(labels == v).astype(np.float32) for v in range(n_labels)])


def from_one_hot(channels: np.ndarray) -> np.ndarray:
    """Labels from the one-hot channels of labels 1-4 after linear resampling (they blend
    where labels meet): the largest channel, where it beats the background they leave."""
    background = 1.0 - channels.sum(0)
    return np.where(channels.max(0) > background, 1 + channels.argmax(0), 0).astype(np.uint8)
