"""bvmesh.plausibility: what no heart has is removed, a real heart is kept."""

from __future__ import annotations

import numpy as np
import pytest

from bvmesh.labels import LV_MYO, RV_POOL
from bvmesh.plausibility import enforce
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
    assert any(r.rule == "apical_growth" and r.structure == "heart" for r in removals)
    real = labels > 0
    assert ((out > 0) & real).sum() >= 0.995 * real.sum()  # the heart itself stays
