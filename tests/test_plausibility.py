"""bvmesh.plausibility: what no heart has is removed, a real heart is kept."""

from __future__ import annotations

import numpy as np
import pytest

from bvmesh.labels import LV_MYO, LV_POOL, RV_POOL
from bvmesh.plausibility import cavity_waist, enforce
from bvmesh.testing import make_phantom


def _stack(det_sign: int = 1) -> np.ndarray:
    """The phantom on a 1.25 mm grid, axis 0 from the base (index 2) toward the apex."""
    ph = make_phantom((1.25, 1.25, 1.25), slice_axis=0, base_at_start=True, det_sign=det_sign,
                      truth=False)
    return ph.labels


def _middle(labels: np.ndarray) -> int:
    rows = np.flatnonzero(labels.any(axis=(1, 2)))
    return int((rows[0] + rows[-1]) // 2)


@pytest.mark.parametrize("det_sign", [1, -1])
def test_a_real_heart_is_kept(det_sign):
    labels = _stack(det_sign)
    out, removals = enforce(labels, 1.25, _middle(labels))
    assert sum(r.ml for r in removals) < 0.2
    assert (out == RV_POOL).sum() >= 0.995 * (labels == RV_POOL).sum()


def test_a_blob_grown_from_the_apical_rv_into_an_organ_is_removed():
    labels = _stack()
    rows = np.flatnonzero((labels == RV_POOL).any(axis=(1, 2)))
    s0 = rows[-1] - 6  # the RV's apical end
    rv = np.argwhere(labels[s0] == RV_POOL)
    far = rv[np.argmax(rv[:, 0])]  # its outermost point on that slice
    zz, yy, xx = np.mgrid[:labels.shape[0], :labels.shape[1], :labels.shape[2]]
    blob = ((zz - (s0 + 8)) ** 2 + (yy - far[0] - 12) ** 2 + (xx - far[1]) ** 2 < 12 ** 2) \
        & (zz >= s0) & (labels == 0)
    # Connect it to the RV, as a network's RV grows into a bright liver next to the apex.
    grown = labels.copy()
    grown[blob] = RV_POOL
    out, removals = enforce(grown, 1.25, _middle(labels))
    kept_blob = ((out == RV_POOL) & blob).sum() / blob.sum()
    assert kept_blob < 0.1, removals
    real_rv = labels == RV_POOL
    assert ((out == RV_POOL) & real_rv).sum() >= 0.99 * real_rv.sum()
    assert {r.rule for r in removals} & {"apical_growth", "rv_off_septum"}
    assert sum(r.ml for r in removals) > 0.9 * blob.sum() * 1.25 ** 3 / 1000


def test_an_rv_piece_away_from_the_septum_is_removed():
    labels = _stack()
    s = _middle(labels)
    island = np.zeros_like(labels, bool)
    island[s - 3:s + 3, 3:9, 3:9] = True  # in a corner, far from the LV myocardium
    assert not (labels[island]).any()
    labels[island] = RV_POOL
    out, removals = enforce(labels, 1.25, _middle(labels) + 10)  # basal of the init slice too
    assert not (out[island] == RV_POOL).any()
    assert any(r.rule == "rv_off_septum" for r in removals)
    # The LV myocardium is never touched by the RV rule.
    assert ((out == LV_MYO) == (labels == LV_MYO)).all()


@pytest.mark.parametrize("det_sign", [1, -1])
def test_a_cone_that_widens_again_below_a_waist_is_removed(det_sign):
    """The apex narrows to a waist and the network goes on into a fluid-filled stomach
    below it, widening a pixel a slice (what one layer-to-layer rule lets through)."""
    labels = np.pad(_stack(det_sign), [(0, 30), (0, 0), (0, 0)])  # room below the apex
    rows = np.flatnonzero(labels.any(axis=(1, 2)))
    tip = rows[-1]
    centre = np.argwhere(labels[tip] > 0).mean(0).round().astype(int)
    yy, xx = np.mgrid[:labels.shape[1], :labels.shape[2]]
    cone = np.zeros_like(labels, bool)
    for k, s in enumerate(range(tip + 1, min(tip + 25, len(labels)))):
        cone[s] = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= (2 + k) ** 2
    grown = labels.copy()
    grown[cone] = LV_MYO
    out, removals = enforce(grown, 1.25, _middle(labels))
    assert (out[cone] > 0).sum() < 0.1 * cone.sum(), removals  # a few tip-sized layers at most
    assert any(r.rule == "apical_cap" and r.structure == "heart" for r in removals)
    real = labels > 0
    assert ((out > 0) & real).sum() >= 0.995 * real.sum()  # the heart itself stays


def _stomach_below_a_waist(labels: np.ndarray, closed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` (room below the apex) with a fluid-filled organ read as LV cavity and
    wall: from a waist near the apex (or, ``closed``, a few slices past the cavity's end) a
    cavity widening into a disc of 14 mm radius, walled, as a network draws a stomach."""
    cavity_rows = np.flatnonzero((labels == LV_POOL).any(axis=(1, 2)))
    start = cavity_rows[-1] + (4 if closed else -6)
    centre = np.argwhere(labels[cavity_rows[-1]] == LV_POOL).mean(0).round().astype(int)
    yy, xx = np.mgrid[:labels.shape[1], :labels.shape[2]]
    r2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    organ = np.zeros_like(labels, bool)
    grown = labels.copy()
    for k, s in enumerate(range(start, len(labels))):
        radius = min(3 + k, 11)
        inner, outer = r2 <= radius ** 2, r2 <= (radius + 3) ** 2
        organ[s] = outer & ((labels[s] == 0) | inner)
        grown[s][outer & (labels[s] == 0)] = LV_MYO
        grown[s][inner] = LV_POOL
    return grown, organ & (labels == 0)


@pytest.mark.parametrize("det_sign", [1, -1])
@pytest.mark.parametrize("closed", [False, True])
def test_a_cavity_that_widens_again_past_the_apex_is_cut_there(det_sign, closed):
    """A stomach read as LV cavity and wall beyond the apex: a column of it was left by a
    rule that trims each slice to the narrowest section; everything from the waist on
    goes, the heart above it stays."""
    labels = np.pad(_stack(det_sign), [(0, 40), (0, 0), (0, 0)])
    grown, organ = _stomach_below_a_waist(labels, closed)
    out, removals = enforce(grown, 1.25, _middle(labels))
    assert (out[organ] > 0).sum() < 0.02 * organ.sum(), removals
    assert {r.rule for r in removals} & {"apical_waist", "apical_cap"}
    cavity_rows = np.flatnonzero((labels == LV_POOL).any(axis=(1, 2)))
    above = np.zeros_like(labels, bool)
    above[: cavity_rows[-1] - 8] = labels[: cavity_rows[-1] - 8] > 0
    assert ((out > 0) & above).sum() >= 0.995 * above.sum()


def test_cavity_waist_finds_a_widening_past_a_narrowing_not_a_tapering_ventricle():
    taper = np.array([900, 880, 850, 800, 700, 560, 400, 250, 120, 40, 0, 0], float)
    assert cavity_waist(taper, 2, 1.5625) is None
    wobble = np.array([900, 880, 850, 800, 700, 560, 400, 420, 380, 200, 60, 0], float)
    assert cavity_waist(wobble, 2, 1.5625) is None  # 5 % up: a wobbling contour
    stomach = np.array([900, 850, 700, 500, 300, 220, 330, 700, 1000, 1100], float)
    assert cavity_waist(stomach, 2, 1.5625) == (5, 6)
    reopened = np.array([900, 700, 400, 100, 0, 0, 0, 150, 600, 900], float)
    assert cavity_waist(reopened, 2, 1.5625) == (4, 7)
    small = np.array([900, 700, 400, 100, 40, 20, 60, 90, 0], float)  # ACDC's worst: 2.3 x, by 0.5 cm2
    assert cavity_waist(small, 2, 1.5625) is None
    outflow = np.array([300, 250, 700, 900, 880, 850, 700, 400, 120, 0], float)
    assert cavity_waist(outflow, 0, 1.5625) is None  # narrow basal sections are no waist
