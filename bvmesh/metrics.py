"""Segmentation metrics on voxel grids with physical (anisotropic) spacing.

Pure numpy/scipy functions of boolean masks and a voxel -> world (mm) affine; nothing
here reads files, knows label maps or prints. Conventions, stated once:

- Spacing is the column norms of the affine (mm per voxel step along each voxel axis).
  Distances are Euclidean in mm between voxel centres, which is exact when the affine's
  columns are orthogonal (every scanner grid we know of; see :func:`shear`).
- A *surface voxel* is a mask voxel with at least one face neighbour (6-connectivity)
  outside the mask; voxels on the array border count as surface (outside is background).
  This is ITK's ``BinaryContourImageFilter`` definition, which the tests check.
- Surface distances go from each surface voxel of one mask to the nearest surface voxel
  of the other, computed with ``scipy.ndimage.distance_transform_edt(sampling=spacing)``.
  HD is the largest of them (both directions), HD95 the 95th percentile of both
  directions pooled (MedPy's ``hd95``), ASSD the mean of the two directed mean
  distances (MedPy's ``assd``; ITK's "average Hausdorff distance" of the surfaces).
- Dice of two empty masks is undefined (nan); of one empty mask 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: Myocardial tissue density used for LV mass (g/ml), the usual CMR convention.
MYOCARDIUM_DENSITY_G_PER_ML = 1.05
_FACES = ndi.generate_binary_structure(3, 1)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each voxel axis: the affine's column norms."""
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in ml (1 ml = 1000 mm^3), from |det| of the affine."""
    return abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0


def shear(affine: np.ndarray) -> float:
    """Largest |cosine| between two voxel axes (0 for an orthogonal grid).

    Surface distances assume orthogonal axes; callers warn when this is not small.
    """
    m = np.asarray(affine, float)[:3, :3]
    u = m / np.linalg.norm(m, axis=0)
    g = np.abs(u.T @ u - np.eye(3))
    return float(g.max())


def slice_axis(spacing: np.ndarray, shape: tuple[int, ...]) -> int:
    """Through-plane voxel axis: the largest spacing; ties go to the axis with fewest voxels.

    Same rule as :func:`bvmesh.geometry.find_slice_axis`, so both agree on any file.
    """
    from .geometry import find_slice_axis

    return find_slice_axis(spacing, shape)[0]


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice overlap 2|P∩G| / (|P|+|G|) of two boolean masks; nan when both are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    total = int(pred.sum()) + int(gt.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, gt).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask (face neighbours, border counts as outside)."""
    mask = np.asarray(mask, bool)
    return mask & ~ndi.binary_erosion(mask, _FACES, border_value=0)


def _crop_to(*masks: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the union of masks, one voxel wider (clipped to the array).

    Distances between surfaces inside a box only need that box (it is convex), and the
    one-voxel margin keeps surface detection identical to the uncropped array.
    """
    union = np.logical_or.reduce([np.asarray(m, bool) for m in masks])
    idx = np.nonzero(union)
    return tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm: (each pred surface voxel -> gt surface, each gt -> pred surface).

    Both masks must be non-empty (ValueError otherwise: the distance is undefined).
    """
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if not pred.any() or not gt.any():
        raise ValueError("surface distance of an empty mask is undefined")
    box = _crop_to(pred, gt)
    sp, sg = surface(pred[box]), surface(gt[box])
    spacing = np.asarray(spacing, float)
    to_gt = ndi.distance_transform_edt(~sg, sampling=spacing)[sp]
    to_pred = ndi.distance_transform_edt(~sp, sampling=spacing)[sg]
    return to_gt, to_pred


@dataclass(frozen=True)
class SurfaceScores:
    """Surface distances in mm between two masks (nan when either mask is empty)."""

    hd: float
    hd95: float
    assd: float


def surface_scores(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> SurfaceScores:
    """Hausdorff (max), HD95 (pooled 95th percentile) and ASSD, all in mm."""
    if not np.any(pred) or not np.any(gt):
        nan = float("nan")
        return SurfaceScores(nan, nan, nan)
    a, b = surface_distances(pred, gt, spacing)
    both = np.concatenate([a, b])
    return SurfaceScores(float(both.max()), float(np.percentile(both, 95)),
                         float((a.mean() + b.mean()) / 2))


def hausdorff(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> float:
    """Symmetric Hausdorff distance between the surfaces, mm (nan if a mask is empty)."""
    return surface_scores(pred, gt, spacing).hd


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> float:
    """95th percentile of both directed surface distance sets pooled, mm."""
    return surface_scores(pred, gt, spacing).hd95


def assd(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> float:
    """Average symmetric surface distance (mean of the two directed means), mm."""
    return surface_scores(pred, gt, spacing).assd


def volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    """Volume of a mask in ml."""
    return int(np.count_nonzero(mask)) * voxel_volume_ml(affine)


def lv_mass_g(lv_myocardium: np.ndarray, affine: np.ndarray) -> float:
    """LV mass in g: LV myocardium volume (ml) x 1.05 g/ml."""
    return volume_ml(lv_myocardium, affine) * MYOCARDIUM_DENSITY_G_PER_ML


@dataclass(frozen=True)
class SliceRange:
    """The slices a ground truth labels, ordered base -> apex.

    ``axis`` is the slice (voxel) axis; ``base`` and ``apex`` are slice indices at the two
    ends of the labelled range; ``order`` lists every index from base to apex inclusive.
    """

    axis: int
    base: int
    apex: int
    why: str

    @property
    def lo(self) -> int:
        return min(self.base, self.apex)

    @property
    def hi(self) -> int:
        return max(self.base, self.apex)

    @property
    def order(self) -> np.ndarray:
        step = 1 if self.apex >= self.base else -1
        return np.arange(self.base, self.apex + step, step)


def labelled_range(gt_heart: np.ndarray, axis: int) -> SliceRange:
    """Base and apex ends of the ground truth's labelled slices along ``axis``.

    The heart is widest near the base and tapers to the apex, so the base is the end
    whose third of the range has the larger mean labelled area (as in
    :func:`bvmesh.geometry.base_from_areas`). Raises ValueError for an empty mask.
    """
    from .geometry import base_from_areas, heart_extent

    areas = _per_slice(np.asarray(gt_heart, bool), axis).astype(float)
    if not areas.any():
        raise ValueError("the ground truth labels no voxel")
    lo, hi = heart_extent(areas, 0.0)
    base, _, why = base_from_areas(areas, 0.0)
    apex = hi if base == lo else lo
    return SliceRange(axis, base, apex, f"voxel axis {axis}: {why}")


def _per_slice(mask: np.ndarray, axis: int) -> np.ndarray:
    """Voxel count of each slice along ``axis``."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    return np.count_nonzero(mask, axis=other)


def slicewise_dice(pred: np.ndarray, gt: np.ndarray, axis: int,
                   order: np.ndarray | None = None) -> np.ndarray:
    """Dice of each slice along ``axis`` (in ``order`` if given); nan where both are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    inter = _per_slice(pred & gt, axis).astype(float)
    total = (_per_slice(pred, axis) + _per_slice(gt, axis)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(total > 0, 2 * inter / np.maximum(total, 1), np.nan)
    return d if order is None else d[np.asarray(order)]


def consistency(curve: np.ndarray) -> float:
    """Mean |Dice(s+1) - Dice(s)| over neighbouring slices where both are defined.

    0 for a curve that changes smoothly; nan with fewer than two defined neighbours.
    This is the 3D-consistency figure: the paper's propagation aims to keep it low.
    """
    curve = np.asarray(curve, float)
    jumps = np.abs(np.diff(curve))
    jumps = jumps[np.isfinite(jumps)]
    return float(jumps.mean()) if len(jumps) else float("nan")


def _lerp_axis(a: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` at fractional indices ``coords``.

    Separable 1D passes are much cheaper than map_coordinates on a 3D grid and exact
    for trilinear interpolation on an axis-aligned target grid.
    """
    n = a.shape[axis]
    coords = np.clip(coords, 0, n - 1)
    i0 = np.floor(coords).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (coords - i0).astype(a.dtype)
    shape = [1] * a.ndim
    shape[axis] = len(coords)
    w = w.reshape(shape)
    return a.take(i0, axis=axis) * (1 - w) + a.take(i1, axis=axis) * w


def isotropic_masks(masks: list[np.ndarray], affine: np.ndarray, *,
                    box: tuple[tuple[float, float], ...], spacing_mm: float = 1.25
                    ) -> list[np.ndarray]:
    """Resample boolean masks onto one isotropic grid by linear interpolation.

    Each mask is one channel of a one-hot label map: it is interpolated as a fraction in
    [0, 1] and thresholded at 0.5 (the paper's binarisation), so a boundary lies half
    way between slices and a structure's resampled mask depends on that structure alone
    (identical masks stay identical, whatever their neighbours do). ``box`` gives, per
    voxel axis, the first and last position (fractional voxel indices, inclusive) the
    grid spans; it steps ``spacing_mm`` along each voxel axis from the first position.
    """
    spacing = voxel_spacing(affine)
    coords = []
    for axis, (first, last) in enumerate(box):
        step = spacing_mm / spacing[axis]
        n = int(np.floor((last - first) / step + 1e-6)) + 1
        coords.append(first + step * np.arange(n))
    # Crop first: interpolation only reads the two neighbours of each target position.
    crop = tuple(slice(int(np.floor(c[0])), int(np.floor(c[-1])) + 2) for c in coords)
    local = [c - s.start for c, s in zip(coords, crop)]
    # Smallest upsampling first, the coarse slice axis last: the big upsampling then
    # runs on arrays that are already small along the other axes.
    order = np.argsort([len(c) / max(1, s.stop - s.start) for c, s in zip(local, crop)])
    stacked = np.stack([np.asarray(m, bool)[crop] for m in masks]).astype(np.float32)
    for axis in order:
        stacked = _lerp_axis(stacked, int(axis) + 1, local[axis])
    return list(stacked >= 0.5)
