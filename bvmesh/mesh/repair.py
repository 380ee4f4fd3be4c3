"""Topology repair of a label map before meshing, and the geometric RV free wall.

Repairs are made only on the apex side of the base plane and each one's volume is
reported, so a user can see how far the mesh departs from the labels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..labels import BACKGROUND, LV_MYO, LV_POOL, RV_MYO, RV_POOL

SIX = ndimage.generate_binary_structure(3, 1)


def ball(radius: int) -> np.ndarray:
    """A digital ball of ``radius`` voxels."""
    r = np.arange(-radius, radius + 1)
    x, y, z = np.meshgrid(r, r, r, indexing="ij")
    return x**2 + y**2 + z**2 <= radius**2 + 1e-9


def below_plane(shape: tuple[int, ...], affine: np.ndarray, point: np.ndarray,
                normal: np.ndarray) -> np.ndarray:
    """Signed distance (mm) of every voxel centre to the plane, positive toward the base."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)
    d = (np.asarray(normal, np.float32) @ (world - np.asarray(point, np.float32)[:, None]))
    return d.reshape(shape)


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=SIX)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def open_pools_at_base(labels: np.ndarray, affine: np.ndarray, plane_dist: np.ndarray,
                       normal: np.ndarray, reach_mm: float = 10.0
                       ) -> tuple[np.ndarray, dict[int, tuple[int, int, float]]]:
    """Extend every blood pool that stops short of the base plane up to it.

    A ventricle is open at the base; a pool whose top ends a slice or more below the
    plane (the RV often does on the basal slice of a short-axis stack) would otherwise
    be sealed by its wall. The pool's top is its highest layer with a quarter of its
    largest cross-section (a stray voxel nearer the plane does not count). Each column
    along the voxel axis nearest the plane normal whose pool ends within ``reach_mm`` of
    that top is filled from its last pool voxel toward the base up to the plane: through
    background and the pool's own wall, and, where that leaves the pool closed, through
    myocardium too (never through the other pool).
    Returns (labels, {pool: (voxels made pool, of which were myocardium, gap in mm)}).
    """
    dirs = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    cos = dirs.T @ np.asarray(normal, float)
    axis = int(np.argmax(np.abs(cos)))
    spacing = float(np.linalg.norm(affine[:3, axis]))
    step = 1 if cos[axis] > 0 else -1

    def base_up(a: np.ndarray) -> np.ndarray:  # a view with the base at the high end of axis 0
        return np.moveaxis(a, axis, 0)[::step]

    out, dist = base_up(labels).copy(), base_up(plane_dist)
    below, near = dist < 0, dist > -spacing
    level = np.arange(len(out)).reshape(-1, 1, 1)
    added: dict[int, tuple[int, int, float]] = {}
    for pool, wall in ((LV_POOL, LV_MYO), (RV_POOL, RV_MYO)):
        m = out == pool
        if not m.any():
            continue
        area = m.sum(axis=(1, 2))
        top = int(np.flatnonzero(area >= 0.25 * area.max())[-1])
        if (m & near).sum() >= 0.25 * area.max():
            continue  # open at the base already
        gap = float(-dist[top][m[top]].max())
        last = np.where(m, level, -1).max(axis=0)
        columns = last >= top - reach_mm / spacing
        filled = carved = 0
        for passable in ((BACKGROUND, wall), (BACKGROUND, LV_MYO, RV_MYO)):
            beyond = (level > last) & columns
            free = below & np.isin(out, passable)
            fill = beyond & np.logical_and.accumulate(free | ~beyond, axis=0)
            filled += int(fill.sum())
            carved += int(np.isin(out[fill], (LV_MYO, RV_MYO)).sum())
            out[fill] = pool
            if ((out == pool) & near).sum() >= 0.25 * area.max():
                break
            last = np.where(out == pool, level, -1).max(axis=0)
        added[pool] = (filled, carved, gap)
    return np.ascontiguousarray(np.moveaxis(out[::step], 0, axis)), added


def add_rv_wall(labels: np.ndarray, affine: np.ndarray, wall_mm: float,
                allowed: np.ndarray) -> tuple[np.ndarray, int]:
    """A shell of ``wall_mm`` around the RV pool, in background voxels only (so never
    inside the LV), labelled RV myocardium. Returns (labels, voxels added)."""
    rv = labels == RV_POOL
    if not rv.any():
        return labels, 0
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    dist = ndimage.distance_transform_edt(~rv, sampling=spacing)
    shell = (dist <= wall_mm) & (labels == 0) & allowed
    out = labels.copy()
    out[shell] = RV_MYO
    return out, int(shell.sum())


def repair_labels(labels: np.ndarray, allowed: np.ndarray,
                  wrap_voxels: int = 2) -> tuple[np.ndarray, dict[str, int]]:
    """Make the label map mesh as one closed myocardium of genus 0.

    ``allowed``: voxels where myocardium may be added (the apex side of the base plane).
    Steps: the largest 6-connected component of each pool and of the myocardium (2 ∪ 4);
    pools separated by at least ``wrap_voxels`` of (LV) myocardium; every pool wrapped in
    ``wrap_voxels`` of its own myocardium where it touches background; cavities enclosed
    by the myocardium (not open through the base) filled with myocardium (pool voxels
    among them counted as ``sealed_pools``, the largest such cavity's as
    ``largest_sealed_pool``). Tunnels these steps leave are closed on the final mask
    (bvmesh.mesh.topology), with far smaller plugs than turning thin pool parts into
    myocardium, which an earlier version did.
    Returns (labels, voxel counts: removed / added by each step).
    """
    lab = labels.copy()
    counts: dict[str, int] = {}
    removed = 0
    for value in (LV_POOL, RV_POOL):
        m = lab == value
        keep = largest_component(m)
        removed += int(m.sum() - keep.sum())
        lab[m & ~keep] = 0
    myo = np.isin(lab, (LV_MYO, RV_MYO))
    keep = largest_component(myo)
    removed += int(myo.sum() - keep.sum())
    lab[myo & ~keep] = 0
    counts["removed_islands"] = removed

    ring = ball(wrap_voxels)
    septum = (lab == RV_POOL) & ndimage.binary_dilation(lab == LV_POOL, ring) & allowed
    lab[septum] = LV_MYO
    counts["septum"] = int(septum.sum())
    added = 0
    for pool, wall in ((LV_POOL, LV_MYO), (RV_POOL, RV_MYO)):
        shell = ndimage.binary_dilation(lab == pool, ring) & (lab == 0) & allowed
        lab[shell] = wall
        added += int(shell.sum())
    counts["wrap"] = added

    # Cavities: parts of the complement of the myocardium that reach neither the array
    # border nor the base side of the plane (through which the pools stay open).
    myo = np.isin(lab, (LV_MYO, RV_MYO))
    comp, n = ndimage.label(~myo | ~allowed, structure=SIX)
    open_ids = set(np.unique(np.concatenate([
        comp[0].ravel(), comp[-1].ravel(), comp[:, 0].ravel(), comp[:, -1].ravel(),
        comp[:, :, 0].ravel(), comp[:, :, -1].ravel(), comp[~allowed].ravel()])).tolist())
    closed = np.isin(comp, [i for i in range(1, n + 1) if i not in open_ids])
    # A pool closed off this way is a ventricle the labels seal below the base plane
    # (open_pools_at_base could not reach it): counted apart, as the caller must say so.
    sealed = closed & np.isin(lab, (LV_POOL, RV_POOL))
    counts["sealed_pools"] = int(sealed.sum())
    counts["largest_sealed_pool"] = int(np.bincount(comp[sealed]).max()) if sealed.any() else 0
    counts["cavities"] = int(closed.sum()) - counts["sealed_pools"]
    lab[closed] = LV_MYO
    return lab, counts
