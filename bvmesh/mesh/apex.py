"""Closing the apex of a heart whose labels stop while a blood pool is still open.

Works on a label array whose axis 0 runs from the base toward the apex on an isotropic
grid, with the apical end at the last index. Two ways to close it:

- ``flat``: the pools on the last two slices become the myocardium of their side (a lid
  where the labels stop);
- ``extrapolate``: a rounded cap continued beyond the last slice. Its height is where the
  half ellipsoid fitted to the LV's radius over its apical half closes (bvmesh.mesh.apex.
  cap_height; a hemisphere of the last LV radius when the profile gives no ellipse), so it
  follows from the heart's shape and is not a free parameter. Each structure (the whole
  heart, each pool) shrinks by an inward offset of its last section along a quarter
  ellipse; the pools close one apical wall thickness earlier, the RV in proportion to its
  smaller section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..labels import LV_MYO, LV_POOL, RV_MYO, RV_POOL

APEX_MODES = ("extrapolate", "flat")
#: Slices of the lid in ``flat`` mode (2 voxels: the wall the topology repair asks for).
LID_SLICES = 2
#: The tallest cap, as a multiple of the last section's LV radius (a prolate apex).
MAX_ASPECT = 1.5
#: Apical wall thickness (mm) is the last section's wall, kept within these bounds.
APICAL_WALL_MM = (2.5, 10.0)


@dataclass(frozen=True)
class ApexCap:
    """What closing the apex added: slices, height (mm), myocardium and pool (ml)."""

    mode: str
    slices: int
    height_mm: float
    myocardium_ml: float
    pool_ml: float

    def as_dict(self) -> dict:
        return {"mode": self.mode, "slices": self.slices, "height_mm": round(self.height_mm, 1),
                "myocardium_ml": round(self.myocardium_ml, 2), "pool_ml": round(self.pool_ml, 2)}


def is_open(labels: np.ndarray) -> bool:
    """Whether a blood pool reaches the last slice (the apical end) of ``labels``."""
    return bool(np.isin(labels[-1], (LV_POOL, RV_POOL)).any())


def flat_lid(labels: np.ndarray, voxel_ml: float) -> tuple[np.ndarray, ApexCap]:
    """Turn the pools of the last ``LID_SLICES`` slices into the myocardium of their side."""
    out = labels.copy()
    lid = out[-LID_SLICES:]
    changed = int(np.isin(lid, (LV_POOL, RV_POOL)).sum())
    lid[lid == LV_POOL] = LV_MYO
    lid[lid == RV_POOL] = RV_MYO
    return out, ApexCap("flat", 0, 0.0, changed * voxel_ml, -changed * voxel_ml)


def inscribed_radius(mask2d: np.ndarray, spacing: float) -> float:
    """Radius (mm) of the largest disc inside a 2D mask."""
    if not mask2d.any():
        return 0.0
    return float(ndimage.distance_transform_edt(mask2d).max()) * spacing


def cap_height(radii_mm: np.ndarray, spacing: float) -> float:
    """How far (mm) beyond the last slice the LV closes, from its radius profile toward the apex.

    The LV's apical half is close to half an ellipsoid, so its squared radius is a quadratic
    with a negative leading term in the distance along the axis: fitted over the apical half
    of ``radii_mm`` (one per slice, base first), its root beyond the last slice is the apex.
    Without such a fit (a cylinder, a cone) the cap is a hemisphere of the last radius; either
    way at most ``MAX_ASPECT`` x that radius.
    """
    r = np.asarray(radii_mm, float)
    s = np.flatnonzero(r > 0)
    if len(s) == 0:
        return spacing
    end = r[s[-1]]
    half = s[len(s) // 2:]
    height = end
    if len(half) >= 3:
        t = half * spacing
        gamma, beta, alpha = np.polyfit(t, r[half] ** 2, 2)
        # An ellipse, and one that is closing at the end (not a cylinder's numerical noise).
        closing = 2 * gamma * t[-1] + beta < -0.01 * end ** 2 / max(t[-1] - t[0], spacing)
        if gamma < 0 and closing:
            roots = np.roots([gamma, beta, alpha]).real
            beyond = roots[roots > s[-1] * spacing] - s[-1] * spacing
            if len(beyond):
                height = float(beyond.min())
    return float(np.clip(height, spacing, MAX_ASPECT * max(end, spacing)))


def extrapolate(labels: np.ndarray, spacing: float, voxel_ml: float, *,
                predicted: int | None = None) -> tuple[np.ndarray, ApexCap]:
    """``labels`` with a rounded apical cap appended beyond its last slice.

    ``predicted``: how many leading slices are the segmentation's own (the LV's profile is
    measured there, not on slices copied to fill a slab); default all.
    """
    predicted = len(labels) if predicted is None else predicted
    lv_epi = [inscribed_radius(np.isin(s, (LV_POOL, LV_MYO)), spacing) for s in labels[:predicted]]
    end = labels[-1]
    inner = {k: ndimage.distance_transform_edt(m) * spacing
             for k, m in (("heart", end > 0), ("lv", end == LV_POOL), ("rv", end == RV_POOL))}
    rho = {k: float(d.max()) for k, d in inner.items()}
    height = cap_height(np.asarray(lv_epi), spacing)
    wall = float(np.clip(inscribed_radius(np.isin(end, (LV_POOL, LV_MYO)), spacing) - rho["lv"],
                         *APICAL_WALL_MM)) if rho["lv"] else APICAL_WALL_MM[0]
    lv_height = max(height - wall, spacing)
    heights = {"heart": height, "lv": lv_height,
               "rv": lv_height * min(1.0, rho["rv"] / rho["lv"]) if rho["lv"] else lv_height}
    cap = np.zeros((int(np.ceil(height / spacing)), *end.shape), labels.dtype)
    side_rv = np.isin(end, (RV_POOL, RV_MYO))
    for i in range(len(cap)):
        t = (i + 1) * spacing
        shell = _shrunk(inner["heart"], rho["heart"], t, heights["heart"])
        if not shell.any():
            cap = cap[:i]
            break
        cap[i][shell] = np.where(side_rv[shell], RV_MYO, LV_MYO)
        core = ndimage.distance_transform_edt(shell) * spacing > wall
        for key, value in (("lv", LV_POOL), ("rv", RV_POOL)):
            if rho[key]:
                cap[i][_shrunk(inner[key], rho[key], t, heights[key]) & core] = value
    out = np.concatenate([labels, cap])
    pool = int(np.isin(cap, (LV_POOL, RV_POOL)).sum())
    myo = int(np.isin(cap, (LV_MYO, RV_MYO)).sum())
    return out, ApexCap("extrapolate", len(cap), len(cap) * spacing, myo * voxel_ml, pool * voxel_ml)


def _shrunk(inner: np.ndarray, rho: float, t: float, height: float) -> np.ndarray:
    """The section ``t`` mm into a cap of ``height``: the last section offset inward along a
    quarter ellipse, so that it closes exactly at ``height``."""
    if t >= height:
        return np.zeros(inner.shape, bool)
    return inner > rho * (1 - np.sqrt(1 - (t / height) ** 2))
