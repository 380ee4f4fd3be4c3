"""Slice axis, base/apex order and the isotropic stack grid, from the affine alone.

Terms: the *slice axis* is the voxel axis through the short-axis planes; a *slice
index* is 0-based along it in the file as stored. The *stack* is the resampled ROI:
an array indexed (s, r, c) with s = 0 at the base slice and increasing toward the apex,
isotropic voxels (1.25 mm by default), and an exact 4x4 map back to input voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GeometryError


def find_slice_axis(spacing: np.ndarray, shape: tuple[int, ...]) -> tuple[int, str]:
    """The voxel axis with the largest spacing (ties: the one with fewest voxels), and why."""
    spacing = np.asarray(spacing, float)
    order = sorted(range(3), key=lambda a: (-round(spacing[a], 3), shape[a]))
    axis = order[0]
    if np.isclose(spacing[order[0]], spacing[order[1]], rtol=1e-3):
        return axis, (f"axis {axis}: spacings are equal, so the axis with fewest voxels "
                      f"({shape[axis]}); pass --slice-axis if this is wrong")
    return axis, f"axis {axis}: largest spacing ({spacing[axis]:.3g} mm)"


@dataclass(frozen=True)
class StackGrid:
    """The isotropic ROI grid. ``to_input`` maps stack (s, r, c, 1) to input (i, j, k, 1)."""

    shape: tuple[int, int, int]
    to_input: np.ndarray
    affine: np.ndarray  # stack index -> world mm
    spacing_mm: float

    @property
    def to_stack(self) -> np.ndarray:
        return np.linalg.inv(self.to_input)

    def acquired(self, slice_axis: int, n_slices: int) -> np.ndarray:
        """Stack positions (fractional slice indices) of the input's slices along
        ``slice_axis`` that lie within one stack slice of the stack (which stops within a
        stack slice of the last input slice)."""
        s = self.to_stack[0, slice_axis] * np.arange(n_slices) + self.to_stack[0, 3]
        return s[(s > -1) & (s < self.shape[0])]

    def input_slice(self, stack_slice, slice_axis: int):
        """The input slice index (fractional) that stack slice(s) ``stack_slice`` lie on:
        stack slice s maps to ``to_input[slice_axis] . (s, r, c, 1)`` whatever r and c."""
        return self.to_input[slice_axis, 0] * np.asarray(stack_slice, float) + self.to_input[slice_axis, 3]


def stack_grid(affine: np.ndarray, shape: tuple[int, int, int], *, slice_axis: int,
               base_slice: float, apex_sign: int, center: tuple[float, float], size: int = 128,
               spacing_mm: float = 1.25, extra_above: int = 0) -> StackGrid:
    """The grid of an isotropic ``size`` x ``size`` ROI, from the base to the apex end.

    ``center`` is the ROI centre in input voxel units along the two in-plane axes (in
    axis order). Stack slice 0 lies on ``base_slice``; stack slices go in steps of
    ``spacing_mm`` in the direction ``apex_sign`` (+1: increasing slice index) up to the
    last input slice. ``extra_above`` adds slices above the base (for training).
    The in-plane axes keep the input's own directions, so the map is a scaling and a
    permutation of voxel axes: exact, and trivially inverted.
    """
    if apex_sign not in (-1, 1):
        raise GeometryError(f"apex direction must be +1 or -1, not {apex_sign}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    rows, cols = [a for a in range(3) if a != slice_axis]
    last = shape[slice_axis] - 1 if apex_sign > 0 else 0
    n_below = int(np.floor(abs(last - base_slice) * spacing[slice_axis] / spacing_mm + 1e-6)) + 1
    n_slices = n_below + extra_above
    m = np.zeros((4, 4))
    m[slice_axis, 0] = apex_sign * spacing_mm / spacing[slice_axis]
    m[slice_axis, 3] = base_slice - extra_above * m[slice_axis, 0]
    half = (size - 1) / 2
    for stack_axis, (axis, c) in enumerate(zip((rows, cols), center), start=1):
        m[axis, stack_axis] = spacing_mm / spacing[axis]
        m[axis, 3] = c - half * m[axis, stack_axis]
    m[3, 3] = 1
    return StackGrid((n_slices, size, size), m, affine @ m, spacing_mm)


def slice_rois(affine: np.ndarray, shape: tuple[int, int, int], *, slice_axis: int,
               center: tuple[float, float], size: int = 128, spacing_mm: float = 1.25) -> StackGrid:
    """The ROI of :func:`stack_grid` on each acquired slice: stack slice s is input slice s.

    In-plane it is the stack's isotropic grid; through the stack it steps one input slice,
    so ``spacing_mm`` is the in-plane spacing only.
    """
    grid = stack_grid(affine, shape, slice_axis=slice_axis, base_slice=0, apex_sign=1,
                      center=center, size=size, spacing_mm=spacing_mm)
    m = grid.to_input.copy()
    m[slice_axis, 0] = 1.0
    return StackGrid((shape[slice_axis], size, size), m, affine @ m, spacing_mm)


def heart_extent(areas: np.ndarray, min_fraction: float = 0.05) -> tuple[int, int]:
    """First and last slice whose heart area exceeds ``min_fraction`` of the largest."""
    present = np.flatnonzero(areas > min_fraction * areas.max()) if areas.max() > 0 else []
    if len(present) == 0:
        raise GeometryError("no heart found in any slice; pass --roi and --base-slice")
    return int(present[0]), int(present[-1])


def base_from_areas(areas: np.ndarray, min_fraction: float = 0.05) -> tuple[int, int, str]:
    """Base slice and apex direction from per-slice heart areas (mm^2), and why.

    The heart is widest near the base and tapers to the apex, so of the two ends of
    the heart's slice range, the base is the one next to the larger cross-sections.
    Slices below ``min_fraction`` of the largest area do not count as heart (0: any).
    """
    first, last = heart_extent(areas, min_fraction)
    n = max(1, (last - first + 1) // 3)
    top, bottom = areas[first:first + n].mean(), areas[last - n + 1:last + 1].mean()
    if top >= bottom:
        base, sign = first, 1
    else:
        base, sign = last, -1
    why = (f"heart found on slices {first}..{last}; slice {base} taken as the base because the "
           f"heart is wider at that end (mean area {max(top, bottom):.0f} vs {min(top, bottom):.0f} "
           "over a third of the range)")
    return base, sign, why


def apex_sign_from_areas(areas: np.ndarray, base_slice: int, min_fraction: float = 0.05) -> int:
    """With the base given: the apex lies on the side where the heart goes on longer.

    Counted in slices of heart (area above ``min_fraction`` of the largest) running on
    from the base, not in summed area: the atria and outflow tracts above a base in the
    middle of a stack are as wide as the ventricles (summed areas chose them on a
    synthetic scan with two slices of atria above the base), but a ventricle runs on
    further. Equal runs: the summed areas decide; no heart on either side: the longer side.
    """
    present = areas > min_fraction * areas.max() if areas.max() > 0 else np.zeros(len(areas), bool)

    def run(step: int) -> int:
        k, n = base_slice + step, 0
        while 0 <= k < len(areas) and present[k]:
            k, n = k + step, n + 1
        return n

    below, above = run(1), run(-1)
    if below != above:
        return 1 if below > above else -1
    below, above = areas[base_slice + 1:].sum(), areas[:base_slice].sum()
    if below == above:
        return 1 if base_slice < len(areas) / 2 else -1
    return 1 if below > above else -1
