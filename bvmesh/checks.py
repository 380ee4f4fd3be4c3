"""Automatic quality control of one segmentation: named checks, one table of ranges, a verdict.

A cohort of thousands of scans is not looked at case by case, so each report says
whether its result is plausible: every check has its value, the range it was held to
and a verdict (``pass``, ``warn``, ``fail``), and the case's verdict is the worst of
them. Ranges live in :data:`RANGES`, each with where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .base import APEX_CLOSE, CLOSE_CALL
from .labels import LV_MYO, LV_POOL, RV_POOL

VERDICTS = ("pass", "warn", "fail")


@dataclass(frozen=True)
class Range:
    """Accepted (warn_lo, warn_hi) and tolerated (fail_lo, fail_hi) values, and their source."""

    warn: tuple[float, float]
    fail: tuple[float, float]
    source: str


#: Ranges of every check; the figures quoted from ACDC's manual labels and held-out
#: predictions come from ``scripts/qc_ranges.py``. Volumes (ml) and mass (g): adult normal
#: ranges (Kawel-Boehm et al., J Cardiovasc Magn Reson 2020) widened to the pathology a
#: research cohort holds (ACDC's dilated and hypertrophic hearts reach LV pools of 400 ml
#: and LV masses of 300 g), for ED or ES alike; outside the fail range no adult heart is.
RANGES: dict[str, Range] = {
    "lv_pool_ml": Range((15, 400), (5, 600), "adult ED/ES, normal to dilated (Kawel-Boehm 2020; ACDC)"),
    "rv_pool_ml": Range((15, 400), (5, 600), "adult ED/ES, normal to dilated (Kawel-Boehm 2020; ACDC)"),
    "lv_mass_g": Range((40, 300), (20, 500), "adult LV mass, normal to hypertrophic (Kawel-Boehm 2020)"),
    # Mid-ventricular LV wall (mm, from the sections' areas): 6-12 mm normally at ED, and
    # thicker at ES; ACDC's 200 manual label maps give 4.3-16.4 mm at ED and 6.7-25.2 mm at
    # ES (hypertrophic hearts); under 3 mm is no wall.
    "lv_wall_mm": Range((4, 26), (2.5, 35), "mid-ventricular wall thickness (normal 6-12 mm at ED; HCM, ES)"),
    # Share of the mid-ventricular LV pool's edge that touches background instead of muscle:
    # the LV pool is ringed by myocardium there (ACDC's labelling convention too).
    "lv_ring_open": Range((0, 0.05), (0, 0.25), "LV myocardium rings the pool at mid-ventricle"),
    # Share of mid-ventricular slices with RV pool on which it lies beside the LV myocardium.
    "rv_beside_septum": Range((0.8, 1), (0.5, 1), "the RV wraps around the septum"),
    # Largest change of the heart's section between neighbouring slices, relative to the
    # larger: a ventricle changes smoothly; 60 % is a slice missed or a structure taken.
    "area_jump": Range((0, 0.6), (0, 0.85), "sections change smoothly from slice to slice"),
    # Tissue the plausibility rules removed (ml): the network saw heart where none can be.
    # On held-out ACDC (folds 0-2 of the bundled recipe, 120 volumes, every one segmented
    # right) the rules removed up to 24 ml below a waist of the apex, so 10 ml warned on 8
    # good cases (folds 3-4, not used to set it: up to 26 ml); blobs grown into the liver
    # of synthetic scans are 100-200 ml.
    "removed_ml": Range((0, 30), (0, 80), "bvmesh.plausibility removals"),
    # How much likelier the detected base is than the runner-up (log-likelihood; only
    # when detected): below CLOSE_CALL the runner-up is a real alternative, worth a look.
    "base_margin": Range((CLOSE_CALL, 1e9), (0, 1e9), "bvmesh.base: a close call between two slices"),
    # How clearly the ventricles' sections told the apex end from the base end (only when
    # read from the image): below APEX_CLOSE the direction, and so the base, may be the
    # wrong way round; --apex-direction settles it.
    "apex_contrast": Range((APEX_CLOSE, 1.0), (0, 1.0), "bvmesh.base: the apex direction read "
                           "from the sections at the heart's two ends"),
    # The patient's-right (RAS +x) share of the direction from the LV pool to the RV pool,
    # in world mm: the RV lies to the right of the LV (0.32-1.0 on all 200 ACDC frames'
    # manual labels, 0.91 on the Sunnybrook example). Below 0 the image is mirrored against
    # its header (an axis flipped in the data, not in the affine), or the header is wrong;
    # only a warning: headers stripped of their orientation exist.
    "rv_right": Range((0.0, 1.0), (-1.0, 1.0), "the RV lies to the patient's right of the LV"),
    # The least image texture over the heart's slices: the correlation of neighbouring
    # pixels in the heart's in-plane box. 0.83-0.98 on every slice of all 200 ACDC frames,
    # 0.94-0.95 on the Sunnybrook example, about 0.02 on a slice of uniform noise, and 0.4
    # on bvmesh.testing's phantoms, whose white noise is harsher than any reconstructed
    # image's; the ranges leave room for noisy scans. Low: a slice holds no image
    # (corrupted, noise, a blank frame).
    "image_texture": Range((0.3, 1.0), (0.1, 1.0), "every heart slice holds an image"),
    # Rank correlation between slices' distance and their images' likeness (slice_order):
    # -0.33 at most on all 200 ACDC frames (median -0.77), above -0.33 on 95 % of them
    # shuffled at random (median +0.02); the warning starts just above the in-order range
    # (at -0.25 it missed a shuffled held-out stack at -0.254). Above: the slices are not
    # in their spatial order (a series sorted by acquisition time or file name).
    "slice_order": Range((-1.0, -0.3), (-1.0, 0.25), "neighbouring slices look alike"),
    # The most apical section with labels relative to the largest, when the scan goes on
    # beyond it: the ventricles taper to the apex (ACDC's manual labels that end before
    # their scan does: at most 0.53; held-out predictions: at most 0.37). A large last
    # section means the segmentation stopped (propagation lost at a corrupted slice).
    "apical_end": Range((0.0, 0.6), (0.0, 1.0), "the heart tapers before the labels end"),
}


def _verdict(value: float | None, rng: Range) -> str:
    if value is None:
        return "pass"
    if not rng.fail[0] <= value <= rng.fail[1]:
        return "fail"
    if not rng.warn[0] <= value <= rng.warn[1]:
        return "warn"
    return "pass"


def measures(labels: np.ndarray, spacing: np.ndarray, slice_axis: int, base: int, sign: int,
             measurements: dict, removed_ml: float) -> dict[str, float | None]:
    """The value of every check (None: not measurable, e.g. no RV)."""
    lab = np.moveaxis(labels, slice_axis, 0)
    if sign < 0:
        lab = lab[::-1]
        base = len(lab) - 1 - base
    lab = lab[base:]  # from the base toward the apex
    pixel = float(np.prod([spacing[a] for a in range(3) if a != slice_axis]))
    heart = np.flatnonzero((lab > 0).any(axis=(1, 2)))
    values: dict[str, float | None] = {k: measurements.get(k) for k in ("lv_pool_ml", "rv_pool_ml",
                                                                         "lv_mass_g")}
    values["removed_ml"] = removed_ml
    if len(heart) == 0:
        return {**values, "lv_wall_mm": None, "lv_ring_open": None, "rv_beside_septum": None,
                "area_jump": None, "apical_end": None}
    n = len(heart)
    mid = heart[n // 3: max(n // 3 + 1, 2 * n // 3)]
    values["lv_wall_mm"] = _wall_mm(lab[mid], pixel)
    values["lv_ring_open"] = _ring_open(lab[mid])
    values["rv_beside_septum"] = _rv_beside(lab[mid], np.sqrt(pixel))
    areas = (lab[heart[0]:heart[-1] + 1] > 0).sum(axis=(1, 2)).astype(float)
    inner = areas[1:-1] if len(areas) > 3 else areas  # the end slices may change abruptly
    jumps = np.abs(np.diff(inner)) / np.maximum(np.maximum(inner[1:], inner[:-1]), 1)
    values["area_jump"] = float(jumps.max()) if len(jumps) else 0.0
    sections = (lab > 0).sum(axis=(1, 2))
    values["apical_end"] = float(sections[heart[-1]] / sections.max()) \
        if heart[-1] < len(lab) - 1 else None  # None: the labels reach the scan's end
    return values


def image_texture(image: np.ndarray, labels: np.ndarray, slice_axis: int,
                  located: np.ndarray | None = None, margin: int = 10) -> float | None:
    """The least, over the heart's slices, of the mean correlation between neighbouring
    pixels (along rows and along columns) in the heart's in-plane box widened by
    ``margin`` pixels; None without heart. The slices read run from the first to the
    last that hold labels or, in ``located`` (input slice indices), where the locator saw
    heart, and one slice beyond each end: a corrupted slice stops the locator and
    propagation, so both often end just before it. (Not every slice of the scan: one far
    from the heart may hold little but air.)"""
    img = np.moveaxis(np.asarray(image, np.float64), slice_axis, 0)
    heart = np.moveaxis(labels > 0, slice_axis, 0)
    on = np.flatnonzero(heart.any(axis=(1, 2)))
    if len(on) == 0:
        return None
    if located is not None and len(located):
        on = np.union1d(on, located)
    on = np.arange(max(on[0] - 1, 0), min(on[-1] + 2, len(img)))  # and the slice beyond each end
    box = _heart_box(img, heart, margin)[on[0]:on[-1] + 1]
    return float(min(_neighbour_correlation(s) for s in box))


def slice_order(image: np.ndarray, labels: np.ndarray, slice_axis: int,
                margin: int = 10) -> float | None:
    """Spearman's rank correlation between how far apart two slices are and how alike
    their images are (Pearson, in the heart's in-plane box widened by ``margin``), over
    every pair of slices: strongly negative in a stack in its acquired order, near zero
    when the slices are out of order. None without heart or with under 4 slices."""
    img = np.moveaxis(np.asarray(image, np.float64), slice_axis, 0)
    heart = np.moveaxis(labels > 0, slice_axis, 0)
    if len(img) < 4 or not heart.any():
        return None
    x = _heart_box(img, heart, margin).reshape(len(img), -1)
    x = x - x.mean(1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    i, j = np.triu_indices(len(img), 1)
    a, b = _ranks(j - i), _ranks((x @ x.T)[i, j])
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else None


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks of ``v`` from 1, ties given their mean rank (as Spearman's correlation takes
    them; scipy.stats would cost a cold run most of a second to import)."""
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0)[inverse]).astype(float)


def _heart_box(img: np.ndarray, heart: np.ndarray, margin: int) -> np.ndarray:
    """Every slice of ``img`` (slices first) cut to the in-plane box of ``heart`` on any
    slice, widened by ``margin`` pixels."""
    rows, cols = np.nonzero(heart.any(axis=0))
    return img[:, max(rows.min() - margin, 0):rows.max() + margin + 1,
               max(cols.min() - margin, 0):cols.max() + margin + 1]


def _neighbour_correlation(s: np.ndarray) -> float:
    pairs = [(s[1:], s[:-1]), (s[:, 1:], s[:, :-1])]
    out = []
    for a, b in pairs:
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        out.append((a * b).sum() / denom if denom > 0 else 0.0)  # a blank slice: no texture
    return float(np.mean(out))


def rv_right(labels: np.ndarray, affine: np.ndarray) -> float | None:
    """The world x (RAS: toward the patient's right) of the unit vector from the LV pool's
    centre to the RV pool's; None without both pools."""
    lv, rv = np.argwhere(labels == LV_POOL), np.argwhere(labels == RV_POOL)
    if not len(lv) or not len(rv):
        return None
    d = affine[:3, :3] @ (rv.mean(0) - lv.mean(0))
    norm = float(np.linalg.norm(d))
    return float(d[0] / norm) if norm > 0 else None


def _wall_mm(slices: np.ndarray, pixel_mm2: float) -> float | None:
    """Median over slices of r_epi - r_endo, radii of circles of the sections' areas."""
    out = []
    for s in slices:
        pool, myo = (s == LV_POOL).sum() * pixel_mm2, (s == LV_MYO).sum() * pixel_mm2
        if pool > 0 and myo > 0:
            out.append(np.sqrt((pool + myo) / np.pi) - np.sqrt(pool / np.pi))
    return float(np.median(out)) if out else None


def _ring_open(slices: np.ndarray) -> float | None:
    """Share of the LV pool's outer edge pixels that touch background."""
    edge = touching_bg = 0
    for s in slices:
        pool = s == LV_POOL
        if not pool.any():
            continue
        rim = ndimage.binary_dilation(pool) & ~pool
        edge += int(rim.sum())
        touching_bg += int((rim & (s == 0)).sum())
    return touching_bg / edge if edge else None


def _rv_beside(slices: np.ndarray, pixel_mm: float, reach_mm: float = 5.0) -> float | None:
    """Share of slices with RV pool whose RV pool comes within ``reach_mm`` of LV myocardium."""
    with_rv = beside = 0
    for s in slices:
        rv = s == RV_POOL
        if not rv.any():
            continue
        with_rv += 1
        lv = s == LV_MYO
        if lv.any() and ndimage.distance_transform_edt(~lv)[rv].min() * pixel_mm <= reach_mm:
            beside += 1
    return beside / with_rv if with_rv else None


#: Checks of a cine beyond its ED and ES frames' own.
CINE_RANGES: dict[str, Range] = {
    # LV EF: normal 55-70 %; ACDC's dilated and infarcted hearts go down to about 10 %.
    "lv_ef_pct": Range((15, 80), (3, 95), "LV ejection fraction, normal to severe failure (ACDC)"),
    "rv_ef_pct": Range((15, 80), (3, 95), "RV ejection fraction, normal to severe failure"),
    # Myocardium is nearly incompressible: its volume changes by a few % over the cycle, so
    # a large change is a frame whose segmentation took or lost tissue.
    "myocardium_change": Range((0, 0.2), (0, 0.4),
                               "(max - min) / median myocardial volume over the frames"),
}


def _checks(values: dict[str, float | None], ranges: dict[str, Range]) -> dict[str, dict]:
    return {name: {"value": None if values.get(name) is None else round(float(values[name]), 3),
                   "warn_range": list(rng.warn), "fail_range": list(rng.fail),
                   "verdict": _verdict(values.get(name), rng), "source": rng.source}
            for name, rng in ranges.items()}


def _summary(checks: dict[str, dict], strict: bool) -> dict:
    """The qc block of ``checks``: the worst verdict and the names that warned or failed."""
    if strict:
        for c in checks.values():
            c["verdict"] = "fail" if c["verdict"] == "warn" else c["verdict"]
    worst = max((c["verdict"] for c in checks.values()), key=VERDICTS.index, default="pass")
    return {"verdict": worst, "strict": strict,
            "failed": [k for k, c in checks.items() if c["verdict"] == "fail"],
            "warned": [k for k, c in checks.items() if c["verdict"] == "warn"], "checks": checks}


def assess(values: dict[str, float | None], *, mesh_passed: bool | None = None,
           strict: bool = False) -> dict:
    """The report's ``qc`` block: each check's value, ranges, verdict; the overall verdict
    and the names of the checks that warned or failed. ``strict``: a warning fails."""
    checks = _checks(values, RANGES)
    if not values.get("lv_pool_ml") and not values.get("lv_mass_g"):
        checks["heart_found"] = {"value": False, "verdict": "fail",
                                 "source": "no LV was segmented at all"}
    qc = _summary(checks, strict)
    return qc if mesh_passed is None else with_mesh(qc, mesh_passed)


def with_mesh(qc: dict, mesh_passed: bool) -> dict:
    """``qc`` with the mesh gate's outcome as one more check."""
    checks = {**qc["checks"], "mesh_gate": {
        "value": mesh_passed, "verdict": "pass" if mesh_passed else "fail",
        "source": "bvmesh.mesh.quality (exit 3 on its own)"}}
    return _summary(checks, qc["strict"])


def assess_cine(frames: dict[str, dict], function: dict, myocardium_ml: list[float], *,
                strict: bool = False) -> dict:
    """A cine's ``qc`` block: its own checks (:data:`CINE_RANGES`) and every check of the
    named frames' blocks (``{"ED": qc, "ES": qc}``), named ``ED:lv_wall_mm`` and so on."""
    myo = np.asarray(myocardium_ml, float)
    change = float((myo.max() - myo.min()) / np.median(myo)) if np.median(myo) > 0 else None
    values = {"lv_ef_pct": function.get("lv_ef_pct"), "rv_ef_pct": function.get("rv_ef_pct"),
              "myocardium_change": change}
    checks = _checks(values, CINE_RANGES)
    for name, qc in frames.items():
        checks.update({f"{name}:{k}": dict(c) for k, c in qc["checks"].items()})
    return _summary(checks, strict)
