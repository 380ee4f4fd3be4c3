"""Closing the apex of a heart whose labels stop while a blood pool is still open.

Works on a label array whose axis 0 runs from the base toward the apex on an isotropic
grid, with the apical end at the last index. Two ways to close it:

- ``flat``: the pools on the last two slices become the myocardium of their side (a lid
  where the labels stop);
- ``extrapolate``: a rounded cap continued beyond the last slice from the shape and the
  taper of the last centimetres. Each structure (the whole heart, each pool) shrinks
  by an inward offset of its last cross-section that follows a quarter ellipse: the
  whole heart's ellipse continues the measured taper of its inscribed radius (a
  cylinder gets a hemisphere, a cone nearly closed gets a short cap), the pools close
  one apical wall thickness earlier, the RV in proportion to its smaller section.
  The height follows from the shape; it is not a free parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..labels import LV_MYO, LV_POOL, RV_MYO, RV_POOL

APEX_MODES = ("extrapolate", "flat")
#: Slices of the lid in ``flat`` mode (2 voxels: the wall the topology repair asks for).
LID_SLICES = 2
#: How far back from the end (mm) the taper of the heart is measured.
TAPER_WINDOW_MM = 15.0
#: Largest taper slope used (mm of inscribed radius lost per mm toward the apex).
MAX_TAPER = 1.5
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


def taper(labels: np.ndarray, spacing: float, predicted: int) -> float:
    """Loss of the heart's inscribed radius per mm toward the apex over the last
    ``TAPER_WINDOW_MM`` of the first ``predicted`` slices (the rest may be copies)."""
    n = max(2, int(round(TAPER_WINDOW_MM / spacing)))
    lo = max(0, predicted - n)
    s = np.arange(lo, predicted)
    r = np.array([inscribed_radius(labels[i] > 0, spacing) for i in s])
    keep = r > 0
    if keep.sum() < 2:
        return 0.0
    slope = np.polyfit(s[keep] * spacing, r[keep], 1)[0]
    return float(np.clip(-slope, 0.0, MAX_TAPER))


def cap_profile(rho0: float, slope: float) -> tuple[float, float, float]:
    """A quarter ellipse (semi-axes a radial, c = a axial, centre delta behind the end)
    that starts at radius ``rho0`` losing ``slope`` mm per mm. Returns (a, delta, height)."""
    u = slope / np.sqrt(1 + slope * slope)
    a = rho0 / np.sqrt(1 - u * u)
    return a, u * a, a * (1 - u)


def extrapolate(labels: np.ndarray, spacing: float, voxel_ml: float, *,
                predicted: int | None = None) -> tuple[np.ndarray, ApexCap]:
    """``labels`` with a rounded apical cap appended beyond its last slice.

    ``predicted``: how many leading slices are the segmentation's own (the taper is
    measured there, not on slices copied to fill a slab); default all.
    """
    predicted = len(labels) if predicted is None else predicted
    end = labels[-1]
    heart = end > 0
    inner = {k: ndimage.distance_transform_edt(m) * spacing
             for k, m in (("heart", heart), ("lv", end == LV_POOL), ("rv", end == RV_POOL))}
    rho = {k: float(d.max()) for k, d in inner.items()}
    a, delta, height = cap_profile(rho["heart"], taper(labels, spacing, predicted))
    wall = float(np.clip(rho["heart"] - rho["lv"], *APICAL_WALL_MM)) if rho["lv"] else APICAL_WALL_MM[0]
    lv_height = max(height - wall, 0.0)
    rv_height = lv_height * min(1.0, rho["rv"] / rho["lv"]) if rho["lv"] else max(height - wall, 0.0)
    n = int(np.ceil(height / spacing))
    cap = np.zeros((n, *end.shape), labels.dtype)
    side_rv = np.isin(end, (RV_POOL, RV_MYO))
    for i in range(n):
        t = (i + 1) * spacing
        radius = a * np.sqrt(max(0.0, 1 - ((t + delta) / a) ** 2))
        shell = inner["heart"] > rho["heart"] - radius
        if not shell.any():
            cap = cap[:i]
            break
        cap[i][shell] = np.where(side_rv[shell], RV_MYO, LV_MYO)
        core = inner["heart"] > rho["heart"] - radius + wall
        for key, value, h in (("lv", LV_POOL, lv_height), ("rv", RV_POOL, rv_height)):
            if rho[key] and t < h:
                pool = inner[key] > rho[key] * (1 - np.sqrt(1 - (t / h) ** 2))
                cap[i][pool & core] = value
    out = np.concatenate([labels, cap])
    pool = int(np.isin(cap, (LV_POOL, RV_POOL)).sum())
    myo = int(np.isin(cap, (LV_MYO, RV_MYO)).sum())
    return out, ApexCap("extrapolate", len(cap), len(cap) * spacing, myo * voxel_ml, pool * voxel_ml)
