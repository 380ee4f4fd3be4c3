"""qc.png: the slices in the order given, each with its label contours in their colours."""

from __future__ import annotations

import numpy as np
import pytest

from bvmesh.qc import COLOURS, montage


def _has_colour(rgb: np.ndarray, hex_colour: str) -> bool:
    """Some pixels tinted like ``hex_colour``: its strongest channel clearly leads (thin
    antialiased lines blend with the grey image, so no exact match)."""
    target = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    lead = int(np.argmax(target))
    others = [c for c in range(3) if c != lead]
    tinted = rgb[..., lead] - rgb[..., others].max(axis=-1) > 0.25
    return int(tinted.sum()) >= 10


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_montage_draws_each_structure_in_its_colour(slice_axis, tmp_path):
    import matplotlib.image

    shape = [40, 40, 40]
    shape[slice_axis] = 5
    image = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    index = [slice(10, 30)] * 3
    index[slice_axis] = slice(1, 4)
    labels[tuple(index)] = 2  # LV myocardium on slices 1-3 only
    index = [slice(15, 25)] * 3
    index[slice_axis] = slice(1, 4)
    labels[tuple(index)] = 1  # its pool
    path = montage(image, labels, tmp_path / "qc.png", slice_axis=slice_axis, order=[4, 3, 2, 1, 0],
                   marks={3: "base"}, spacing=np.array([1.5, 1.5, 1.5]))
    rgb = matplotlib.image.imread(str(path))
    assert rgb.shape[1] > rgb.shape[0]  # five panels in one row
    panels = rgb[: int(0.8 * rgb.shape[0])]  # the legend below shows every colour
    assert _has_colour(panels, COLOURS[1]) and _has_colour(panels, COLOURS[2])
    assert not _has_colour(panels, COLOURS[3])  # no RV in the labels, none drawn
