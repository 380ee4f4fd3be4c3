"""Preprocessing as the paper: crop around the heart, resample to isotropic 1.25 mm by
linear interpolation, normalise intensities. Also the coarse whole-slice grid on which
the heart is localised automatically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import StackGrid

#: Whole-slice localisation grid: 128 x 128 pixels of 3 mm cover a 384 mm field of view.
LOCATOR_SIZE, LOCATOR_SPACING_MM = 128, 3.0


@dataclass(frozen=True)
class Stack:
    """The normalised isotropic ROI (s, r, c), s = 0 at the base, and its grid."""

    image: np.ndarray
    grid: StackGrid


def _axis_order(matrix: np.ndarray) -> np.ndarray:
    """For a scaling-and-permutation map, the source axis that feeds each output axis."""
    order = np.argmax(np.abs(matrix[:3, :3]), axis=0)
    if sorted(order) != [0, 1, 2] or np.count_nonzero(matrix[:3, :3]) != 3:
        raise ValueError("the grid map must be a scaling and permutation of voxel axes")
    return order


def _zoom(data: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...], *, order: int,
          mode: str, cval: float) -> np.ndarray:
    """``affine_transform`` for a scaling-and-permutation map.

    Transposing the source first leaves a diagonal matrix, which scipy resamples by a
    much faster path than a general matrix (which our permutation would otherwise be).
    """
    src = _axis_order(matrix)
    scale = matrix[src, [0, 1, 2]]
    return ndimage.affine_transform(np.transpose(data, src), scale, offset=matrix[src, 3],
                                    output_shape=shape, order=order, mode=mode, cval=cval,
                                    prefilter=False)


def resample(data: np.ndarray, grid: StackGrid, *, order: int = 1, mode: str = "nearest",
             cval: float = 0.0) -> np.ndarray:
    """Sample an input-grid array on ``grid`` (linear by default)."""
    return _zoom(data, grid.to_input, grid.shape, order=order, mode=mode, cval=cval)


def to_input_grid(channels: np.ndarray, grid: StackGrid, shape: tuple[int, int, int],
                  *, cval: float = 0.0) -> np.ndarray:
    """Sample stack-grid array(s) (C, s, r, c) back onto the input grid, linearly."""
    m = grid.to_stack
    dst = _axis_order(m)  # input axis a is fed by stack axis dst[a]
    inverse = np.argsort(dst)
    # Work in the stack's axis order so the map is diagonal, then put the axes back.
    permuted_shape = tuple(shape[a] for a in inverse)
    pm = np.eye(4)
    pm[:3, :3] = m[:3, :3][:, inverse]
    pm[:3, 3] = m[:3, 3]
    out = np.empty((len(channels), *shape), np.float32)
    for i, ch in enumerate(channels):
        sampled = ndimage.affine_transform(ch, np.diag(pm[:3, :3]), offset=pm[:3, 3],
                                           output_shape=permuted_shape, order=1, mode="constant",
                                           cval=cval, prefilter=False)
        out[i] = np.transpose(sampled, dst)
    return out


def normalise(image: np.ndarray, low: float = 1.0, high: float = 99.0,
              reference: np.ndarray | None = None) -> np.ndarray:
    """Map the [low, high] percentiles of ``reference`` (default: the image) to [0, 1], clipped.

    Percentiles make the scaling robust to a few bright outliers (fat, flow artefacts).
    """
    lo, hi = np.percentile(image if reference is None else reference, [low, high])
    scale = hi - lo if hi > lo else 1.0
    return np.clip((image - lo) / scale, 0.0, 1.0).astype(np.float32)


def make_stack(data: np.ndarray, grid: StackGrid) -> Stack:
    """Crop + isotropic resampling + normalisation: the network's input."""
    return Stack(normalise(resample(data, grid)), grid)


def locator_grid(affine: np.ndarray, shape: tuple[int, int, int], slice_axis: int) -> StackGrid:
    """One coarse slice per input slice, centred on the image, 3 mm pixels."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    rows, cols = [a for a in range(3) if a != slice_axis]
    m = np.zeros((4, 4))
    m[slice_axis, 0] = 1.0
    half = (LOCATOR_SIZE - 1) / 2
    for stack_axis, axis in ((1, rows), (2, cols)):
        m[axis, stack_axis] = LOCATOR_SPACING_MM / spacing[axis]
        m[axis, 3] = (shape[axis] - 1) / 2 - half * m[axis, stack_axis]
    m[3, 3] = 1
    size = LOCATOR_SIZE
    return StackGrid((shape[slice_axis], size, size), m, affine @ m, LOCATOR_SPACING_MM)


def locator_input(data: np.ndarray, grid: StackGrid) -> np.ndarray:
    """The whole slices on the coarse grid, zero outside the field of view, normalised."""
    image = resample(data, grid, mode="constant", cval=float(np.percentile(data, 1)))
    return normalise(image)


@dataclass(frozen=True)
class HeartLocation:
    """Where the heart is: ROI centre (input voxel units, in-plane axes) and areas per slice."""

    center: tuple[float, float]
    areas_mm2: np.ndarray


def heart_from_mask(mask: np.ndarray, grid: StackGrid) -> HeartLocation:
    """Centre and per-slice area of the largest 3D component of a locator mask."""
    labelled, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labelled, range(1, n + 1))
        mask = labelled == (1 + int(np.argmax(sizes)))
    areas = mask.sum((1, 2)) * grid.spacing_mm ** 2
    if not mask.any():
        return HeartLocation((np.nan, np.nan), areas.astype(float))
    _, r, c = ndimage.center_of_mass(mask)
    point = grid.to_input @ np.array([0.0, r, c, 1.0])
    axes = [a for a in range(3) if grid.to_input[a, 0] == 0]
    return HeartLocation((float(point[axes[0]]), float(point[axes[1]])), areas.astype(float))
