"""Label maps made ready to mesh: cropping, the base plane, thick-slice upsampling.

Everything here works on voxel grids and keeps an exact voxel -> world (RAS mm)
affine beside each array; nothing is resampled by nearest neighbour.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import GeometryError
from ..labels import LV_MYO, LV_POOL, RV_MYO, RV_POOL

#: Ratio of largest to smallest voxel spacing above which a grid is a thick-slice stack.
THICK_RATIO = 1.5
#: Signed distance (mm) given to a label absent from a slice: the shape then tapers over
#: about half a slice instead of stopping dead at the last slice that has it.
ABSENT_FRACTION = 0.5


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each voxel axis: the affine's column norms."""
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def plane_normal_of_axis(affine: np.ndarray, axis: int) -> np.ndarray:
    """Unit world normal of the voxel planes across ``axis``, pointing toward increasing index.

    The cross product of the two in-plane columns, not the axis' own column, so that a
    sheared (gantry-tilted) grid still gives the true slice plane.
    """
    a, b = [affine[:3, i] for i in range(3) if i != axis]
    n = np.cross(a, b)
    n /= np.linalg.norm(n)
    return n if n @ affine[:3, axis] > 0 else -n


def crop(labels: np.ndarray, affine: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of the non-zero labels plus ``margin`` voxels of background.

    Pads with background where the box would leave the array, so the result always has
    ``margin`` empty voxels around the heart (marching cubes needs a closed field).
    """
    nz = np.nonzero(labels)
    lo = np.array([int(i.min()) for i in nz]) - margin
    hi = np.array([int(i.max()) for i in nz]) + margin + 1
    out = np.zeros(tuple(hi - lo), labels.dtype)
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, labels.shape)
    dst = tuple(slice(s - o, e - o) for s, e, o in zip(src_lo, src_hi, lo))
    out[dst] = labels[tuple(slice(s, e) for s, e in zip(src_lo, src_hi))]
    shift = np.eye(4)
    shift[:3, 3] = lo
    return out, affine @ shift


def find_slice_axis(labels: np.ndarray, affine: np.ndarray) -> int:
    """The through-plane axis: the largest spacing, or on an isotropic grid the voxel axis
    best aligned with the LV's long axis (first principal axis of the LV, in mm)."""
    spacing = spacing_of(affine)
    if spacing.max() > THICK_RATIO * spacing.min():
        return int(np.argmax(spacing))
    lv = np.isin(labels, (LV_POOL, LV_MYO))
    if lv.sum() < 10:
        lv = labels > 0
    pts = np.argwhere(lv)[:: max(1, int(lv.sum()) // 20000)] @ affine[:3, :3].T
    pts = pts - pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts, full_matrices=False)
    long_axis = vt[0]
    align = [abs(plane_normal_of_axis(affine, a) @ long_axis) for a in range(3)]
    return int(np.argmax(align))


def derive_base_plane(labels: np.ndarray, affine: np.ndarray,
                      axis: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The base plane from the labels: the outer face of the last slice with blood pool at
    the end of the slice axis where the heart's cross-section is largest.

    Returns (point_mm, unit normal from apex toward base, how it was found).
    """
    axis = find_slice_axis(labels, affine) if axis is None else axis
    other = tuple(a for a in range(3) if a != axis)
    # The heart's cross-section (all labels) narrows toward the apex; the pools alone can
    # mislead (an ES LV pool can be larger toward the apex; ACDC patient047 ES).
    heart = (labels > 0).sum(axis=other)
    present = np.flatnonzero(heart)
    if len(present) == 0:
        raise GeometryError("the label map is empty; nothing to mesh")
    k = min(3, len(present))
    top_is_last = heart[present[-k:]].mean() >= heart[present[:k]].mean()
    pools = np.isin(labels, (LV_POOL, RV_POOL))
    what = "blood pool"
    if not pools.any():  # a myocardium-only map
        pools, what = labels > 0, "myocardium"
    with_pool = np.flatnonzero(pools.sum(axis=other))
    k_base, step = (int(with_pool[-1]), 0.5) if top_is_last else (int(with_pool[0]), -0.5)
    in_slice = np.argwhere(np.take(pools, k_base, axis=axis)).mean(axis=0)
    index = np.insert(in_slice, axis, k_base + step)
    point = affine[:3, :3] @ index + affine[:3, 3]
    normal = plane_normal_of_axis(affine, axis) * (1 if top_is_last else -1)
    return point, normal, (f"base plane derived from the labels: outer face of the last slice "
                           f"with {what} along voxel axis {axis}, at the end where the heart "
                           "is widest (--base-slice sets it)")


def signed_distance_2d(mask: np.ndarray, sampling: tuple[float, float],
                       absent: float) -> np.ndarray:
    """Signed distance (mm, negative inside) of a 2D mask, zero on the pixel boundaries."""
    if not mask.any():
        return np.full(mask.shape, absent, np.float32)
    if mask.all():
        return np.full(mask.shape, -absent, np.float32)
    half = 0.5 * min(sampling)
    out = ndimage.distance_transform_edt(~mask, sampling=sampling) - half
    inside = ndimage.distance_transform_edt(mask, sampling=sampling) - half
    return np.where(mask, -inside, out).astype(np.float32)


def upsample_labels(labels: np.ndarray, affine: np.ndarray, *, axis: int | None = None,
                    base_end: int | None = None,
                    step_mm: float | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Upsample a thick-slice label map along its slice axis by shape-based interpolation.

    Shapes are interpolated between slice centres by their signed distances
    (:func:`interpolate_sections`; a label missing from a slice counts as half a slice
    outside, so shapes taper rather than stop). Never nearest neighbour.

    Each thick slice is a slab: the new grid covers every slab whole, in an integer number
    of sub-slices (so slab faces stay voxel faces), at about the in-plane spacing (or
    ``step_mm``). Beyond the end slices, the end shape is kept out to the slab face on the
    base end (``base_end``: +1 toward the last index, -1 the first), with nothing beyond
    it, and tapers at the apex end.

    Returns (labels, affine of the new grid, a note).
    """
    spacing = spacing_of(affine)
    axis = int(np.argmax(spacing)) if axis is None else axis
    in_plane = [a for a in range(3) if a != axis]
    step = float(step_mm or spacing[in_plane].min())
    factor = max(1, int(round(spacing[axis] / step)))
    lab = np.moveaxis(labels, axis, 0)
    sampling = tuple(float(spacing[a]) for a in in_plane)
    lo, hi, t, beyond = _sub_slices(lab, factor, float(spacing[axis]), base_end)
    out = interpolate_sections(lab, sampling, lo=lo, hi=hi, t=t, beyond=beyond,
                               absent=ABSENT_FRACTION * float(spacing[axis]))
    out = np.moveaxis(out, 0, axis)
    m = np.eye(4)
    m[axis, axis] = 1.0 / factor
    m[axis, 3] = 0.5 / factor - 0.5
    note = (f"thick slices ({spacing[axis]:.3g} mm along voxel axis {axis}) upsampled x{factor} "
            f"to {spacing[axis] / factor:.3g} mm by shape-based (signed distance) interpolation")
    return np.ascontiguousarray(out), affine @ m, note


def interpolate_sections(sections: np.ndarray, sampling: tuple[float, float], *,
                         lo: np.ndarray, hi: np.ndarray, t: np.ndarray,
                         beyond: np.ndarray | float = 0.0, absent: float) -> np.ndarray:
    """Labels between 2D sections (axis 0) by shape-based interpolation.

    New slice i lies between sections ``lo[i]`` and ``hi[i]``, a fraction ``t[i]`` of the
    way to ``hi[i]`` (``t`` and ``beyond`` shaped to broadcast over a slice). A shape's 2D
    signed distance (mm) is interpolated linearly, plus ``beyond`` mm (inf: nothing there);
    a shape missing from a section counts as ``absent`` mm outside it, so shapes taper
    rather than stop. The shapes are the nested ones of a heart: the whole heart, the LV
    (pool and wall) and each blood pool. The walls are what lies between them, never
    interpolated as shapes of their own: a thin wall interpolated alone thins between
    sections (the label that is nearest wins), one between two smooth surfaces keeps its
    share of each slice's area.
    """
    out = np.zeros((len(lo), *sections.shape[1:]), np.uint8)
    box = _heart_box(sections)
    if box is not None:
        out[(slice(None), *box)] = _interpolate_nested(sections[(slice(None), *box)], sampling,
                                                      lo, hi, t, beyond, absent)
    return out


def _heart_box(sections: np.ndarray) -> tuple[slice, slice] | None:
    """The in-plane box of every section's labels, grown by the heart's largest centroid
    step between sections (as far as an aligned shape moves) and 2 pixels; None if empty."""
    heart = sections > 0
    if not heart.any():
        return None
    centroids = np.array([np.argwhere(m).mean(0) for m in heart if m.any()])
    step = np.abs(np.diff(centroids, axis=0)).max() if len(centroids) > 1 else 0.0
    margin = int(np.ceil(step)) + 2
    box = []
    for axis in (1, 2):
        hit = np.flatnonzero(heart.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))
        box.append(slice(max(hit[0] - margin, 0), hit[-1] + margin + 1))
    return tuple(box)


def _interpolate_nested(sections: np.ndarray, sampling: tuple[float, float], lo, hi, t,
                        beyond, absent: float) -> np.ndarray:
    """:func:`interpolate_sections` within the heart's box."""
    def distance(mask: np.ndarray) -> np.ndarray:
        sdf = np.stack([signed_distance_2d(m, sampling, absent) for m in mask])
        return _aligned_blend(sdf, mask, lo, hi, t) + beyond

    heart = distance(sections > 0) < 0
    out = np.zeros(heart.shape, np.uint8)
    out[heart] = RV_MYO if (sections == RV_MYO).any() else LV_MYO
    out[heart & (distance(np.isin(sections, (LV_POOL, LV_MYO))) < 0)] = LV_MYO
    pools = [(v, distance(sections == v)) for v in (LV_POOL, RV_POOL) if (sections == v).any()]
    if pools:
        d = np.stack([p for _, p in pools])
        nearest = np.asarray([v for v, _ in pools], np.uint8)[d.argmin(0)]
        pool = heart & (d.min(0) < 0)
        out[pool] = nearest[pool]
    return out


def _aligned_blend(sdf: np.ndarray, masks: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   t: np.ndarray) -> np.ndarray:
    """(1 - t) sdf[lo] + t sdf[hi], each moved first so that its shape's centroid lies on
    the line between the two: a shape that shifts from one section to the next (the RV
    crescent toward the apex) is carried along instead of shrinking where the two miss
    each other. Moves are bilinear with the edges extended, as ndimage.shift(order=1,
    mode="nearest") makes them, by slicing a padded copy (its spline machinery took most
    of a segment mesh's interpolation time)."""
    centroids = [np.argwhere(m).mean(0) if m.any() else None for m in masks]
    steps = [np.abs(centroids[b] - centroids[a]).max() for a, b in zip(lo, hi)
             if centroids[a] is not None and centroids[b] is not None]
    pad = int(np.ceil(max(steps, default=0.0))) + 1
    padded = np.pad(sdf, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = sdf.shape[1:]

    def moved(k: int, shift: np.ndarray) -> np.ndarray:  # out(x) = sdf[k](x - shift)
        (iy, ix), (fy, fx) = np.divmod(-shift, 1.0)
        y, x = pad + int(iy), pad + int(ix)
        win = [[padded[k, y + dy:y + dy + h, x + dx:x + dx + w] for dx in (0, 1)] for dy in (0, 1)]
        return ((1 - fy) * ((1 - fx) * win[0][0] + fx * win[0][1])
                + fy * ((1 - fx) * win[1][0] + fx * win[1][1]))

    tt = np.broadcast_to(t.reshape(-1), lo.shape)
    out = np.empty((len(lo), h, w), np.float32)
    for i, (a, b, f) in enumerate(zip(lo, hi, tt)):
        ca, cb = centroids[a], centroids[b]
        if a == b or f == 0 or ca is None or cb is None:
            out[i] = (1 - f) * sdf[a] + f * sdf[b]
            continue
        c = (1 - f) * ca + f * cb
        out[i] = (1 - f) * moved(a, c - ca) + f * moved(b, c - cb)
    return out


def _sub_slices(lab: np.ndarray, factor: int, slice_mm: float, base_end: int | None):
    """Where each new sub-slice lies between the old slices (axis 0 of ``lab``): the old
    slices below and above it, the weight of the one above, and the distance (mm) added
    beyond the ends (inf where nothing may lie), shaped to broadcast over a slice."""
    n = len(lab)
    # New slice centres, in old index units: sub-slab centres of slabs [-0.5, n - 0.5].
    u = -0.5 + (np.arange(n * factor) + 0.5) / factor
    lo = np.clip(np.floor(u).astype(int), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    t = np.clip(u - lo, 0.0, 1.0).astype(np.float32)
    # Outside [0, n - 1]: distance grows by 1 mm per mm beyond the end (a 45 degree taper).
    beyond = np.where(u < 0, -u, np.where(u > n - 1, u - (n - 1), 0.0)) * slice_mm
    # The base end: the last labelled slab is kept whole out to its face (the base plane
    # cuts there), and nothing lies beyond it; slices above the base are not interpolated.
    filled = np.flatnonzero((lab > 0).any(axis=(1, 2)))
    if base_end is not None and len(filled):
        kb = int(filled[-1] if base_end > 0 else filled[0])
        past = (u - kb) * base_end
        hold = (past > 0) & (past <= 0.5)
        lo[hold], hi[hold], t[hold], beyond[hold] = kb, kb, 0.0, 0.0
        beyond[past > 0.5] = np.inf
    beyond = beyond.astype(np.float32)[:, None, None]
    t = t[:, None, None]
    return lo, hi, t, beyond


def base_plane_from_slice(labels: np.ndarray, affine: np.ndarray, slice_index: int,
                          axis: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The base plane at the outer face of slice ``slice_index`` (0-based, as stored).

    "Outer" is the side away from the bulk of the heart, so the normal points from the
    apex toward the base.
    """
    axis = find_slice_axis(labels, affine) if axis is None else axis
    n = labels.shape[axis]
    if not 0 <= slice_index < n:
        raise GeometryError(f"base slice {slice_index} is outside 0..{n - 1} along voxel "
                            f"axis {axis}")
    other = tuple(a for a in range(3) if a != axis)
    area = (labels > 0).sum(axis=other)
    if not area.any():
        raise GeometryError("the label map is empty; nothing to mesh")
    centre = float((np.arange(n) * area).sum() / area.sum())
    step = 0.5 if slice_index >= centre else -0.5
    in_slice = np.array(labels.shape, float)[list(other)] / 2
    point = affine[:3, :3] @ np.insert(in_slice, axis, slice_index + step) + affine[:3, 3]
    normal = plane_normal_of_axis(affine, axis) * (1 if step > 0 else -1)
    return point, normal, f"base plane: outer face of slice {slice_index} along voxel axis {axis}"
