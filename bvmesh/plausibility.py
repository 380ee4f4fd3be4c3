"""Anatomical plausibility in 3D: remove from a segmentation what no heart has.

Runs on the isotropic stack (axis 0 from the base, s = 0, toward the apex), after the
per-structure clean-up and before the geometric RV wall. Each rule removes voxels and
says where and how much, so a report can list every removal. In the order they run:

- ``rv_off_septum``: on each slice, an RV blood pool piece that does not come within
  ``RV_SEPTUM_GAP_MM`` of the LV myocardium. The RV wraps around the septum; a piece
  away from it (or on a slice with no LV at all) is a neighbouring bright structure.
- ``apical_waist``: apical of the initialisation slice, the LV cavity narrows to the apex
  and never widens again: where its section grows to ``WAIST_RATIO`` times the narrowest
  so far (and by ``WAIST_GAIN_MM2``), after narrowing to half the widest, the network has
  gone on into a bright organ beyond the apex (a fluid-filled stomach reads as a cavity).
  Everything from there on is removed, not just the excess: trimmed to the narrowest
  section, the organ left a column of that width (ACDC's 200 manual label maps: the
  cavity re-widens by at most 1.5 times toward the apex, once 2.3 times from 0.4 to 0.9
  cm2; scripts/apex_profiles.py).
- ``apical_cap``: beyond the last slice of the LV cavity only the apical cap is left, and a
  cap narrows: the first section that grows out of the previous one (a tenth of it more than a
  voxel outside it, or larger by ``GROWTH_PER_MM``) and the ``CAP_MM`` past the cavity's end
  end the heart (a myocardial crescent round a stomach ran on well past a closed LV).
- ``apical_growth``: from the initialisation slice toward the apex the ventricles taper.
  Each slice's heart (all labels) and RV pool must lie within one voxel of the previous
  slice's. The heart's section may not outgrow the smallest section between the
  initialisation slice and it by more than ``REWIDEN`` (ACDC's 200 manual label maps: at
  most 3.2 % from the middle slice on); the RV pool's may not outgrow the previous one by
  more than ``GROWTH_PER_MM`` per mm unless it stays within its largest section basal of
  it (an end-systolic RV narrows and widens again below the base). What exceeds that,
  farthest from the previous slice first, is removed. This is what trims a blob that grows
  from the apex into the liver or the stomach.
- ``apical_fragments``: apical of the initialisation slice, tissue that hangs on to the
  heart only by strands thinner than ``FRAGMENT_MM`` (gone after a 3D opening) is removed:
  the apex is a compact cap of muscle, not a trail of pieces in the liver (a synthetic
  scan kept 4 slices of such pieces after the growth rule).


(A rule that removed tissue past the last slice the heart locator saw heart on removed
the whole real apex of a held-out ACDC volume, 103 ml, where the locator lost the heart two
slices early: the locator is not a judge of the apex, and that rule is gone.)

Nothing basal of the initialisation slice is touched: the base widens by nature, and so,
at end-systole, can the RV below it (starting 20 mm below the base instead removed 38-42 ml
of real RV from two held-out ACDC ES volumes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .labels import LV_MYO, LV_POOL, RV_POOL

#: How close (mm) an RV pool piece must come to the LV myocardium to be kept: the
#: septum touches it; 5 mm leaves room for a thin band the network left unlabelled.
RV_SEPTUM_GAP_MM = 5.0
#: Largest growth of a section toward the apex, per mm. Real ventricles shrink there;
#: 5 % per mm allows for a tilted long axis and a wobbling contour.
GROWTH_PER_MM = 0.05
#: How much the heart's section may exceed the smallest one since the initialisation slice,
#: toward the apex: a heart does not widen again there (ACDC's manual labels: at most 3.2 %
#: slice to slice, never above their running minimum by more); 10 % leaves room for a
#: wobbling network contour between acquired slices.
REWIDEN = 0.10
#: The LV cavity's re-widening toward the apex that ends the heart: this many times its
#: narrowest section apical of its widest, by at least ``WAIST_GAIN_MM2``, once it has
#: narrowed to ``WAIST_FRACTION`` of its widest (ACDC's 200 manual maps: from the middle
#: slice at most 1.5 times, and 2.3 times only from 0.4 to 0.9 cm2; read from their base, no
#: waist at all).
WAIST_RATIO = 2.0
WAIST_GAIN_MM2 = 200.0
WAIST_FRACTION = 0.5
#: How far (mm) the heart may go on past the LV cavity's last slice: the apical cap.
#: ACDC's manual maps hold myocardium without cavity on at most two 10 mm slices past it
#: (2 of 200 maps; one slice in 16; scripts/apex_profiles.py).
CAP_MM = 25.0
#: The share of a cap section that may lie more than a voxel outside the previous one (a
#: wobbling contour) before it counts as growing out of it.
CAP_STRAY = 0.1
#: Radius (mm) of the 3D opening that tells a strand from the heart's body.
FRAGMENT_MM = 2.5
#: Removals smaller than this (ml) are made but not listed (nor counted in the report).
LIST_ML = 0.05


@dataclass(frozen=True)
class Removal:
    """One rule's removal: the structure, the stack slices it touched, its volume (ml)."""

    rule: str
    structure: str
    first_slice: int
    last_slice: int
    ml: float

    def as_dict(self) -> dict:
        return {"rule": self.rule, "structure": self.structure,
                "stack_slices": [self.first_slice, self.last_slice], "ml": round(self.ml, 2)}


def enforce(labels: np.ndarray, spacing_mm: float, init_slice: int) -> tuple[np.ndarray, list[Removal]]:
    """Apply every rule (see the module docstring); returns (labels, removals)."""
    out = labels.copy()
    voxel_ml = spacing_mm ** 3 / 1000
    removals = []
    for rule, remove in (("rv_off_septum", lambda: _rv_off_septum(out, spacing_mm)),
                         ("apical_waist", lambda: _apical_waist(out, spacing_mm, init_slice)),
                         ("apical_cap", lambda: _apical_cap(out, spacing_mm, init_slice)),
                         ("apical_growth", lambda: _apical_growth(out, spacing_mm, init_slice)),
                         ("apical_fragments", lambda: _apical_fragments(out, spacing_mm, init_slice))):
        removed = remove()
        for structure, mask in removed.items():
            if mask.any():
                rows = np.flatnonzero(mask.any(axis=(1, 2)))
                removals.append(Removal(rule, structure, int(rows[0]), int(rows[-1]),
                                        float(mask.sum()) * voxel_ml))
    return out, [r for r in removals if r.ml >= LIST_ML]


def _rv_off_septum(labels: np.ndarray, spacing_mm: float) -> dict[str, np.ndarray]:
    """Remove (in place) RV pool pieces far from the LV myocardium, slice by slice."""
    removed = np.zeros(labels.shape, bool)
    reach = RV_SEPTUM_GAP_MM / spacing_mm
    for s in range(len(labels)):
        rv = labels[s] == RV_POOL
        if not rv.any():
            continue
        lv = labels[s] == LV_MYO
        near = ndimage.distance_transform_edt(~lv) <= reach if lv.any() else np.zeros_like(lv)
        pieces, n = ndimage.label(rv)
        touching = np.unique(pieces[near & rv])
        far = rv & ~np.isin(pieces, touching[touching > 0])
        labels[s][far] = 0
        removed[s] = far
    return {"rv_pool": removed}


def _apical_waist(labels: np.ndarray, spacing_mm: float, init_slice: int) -> dict[str, np.ndarray]:
    """Remove (in place) everything apical of where the LV cavity widens again (module
    docstring)."""
    area = (labels == LV_POOL).sum(axis=(1, 2)).astype(float)
    found = cavity_waist(area, max(init_slice, 0), spacing_mm ** 2)
    if found is None:
        return {"heart": np.zeros(labels.shape, bool)}
    return {"heart": _cut_from(labels, found[1])}


def cavity_waist(area: np.ndarray, start: int, pixel_mm2: float) -> tuple[int, int] | None:
    """Where the LV cavity's sections ``area`` (pixels of ``pixel_mm2``, from the base
    toward the apex) widen again past ``start``: (its narrowest section apical of its
    widest, the first section that is no longer the heart's), or None. The first is past
    the narrowest section; or, where the cavity had closed, where it opens again (what lies
    past its end is the cap). A cavity that only widens below a narrow basal section (the
    outflow tract) has no waist: the narrowing must follow the widest section."""
    if start >= len(area):
        return None
    gain = WAIST_GAIN_MM2 / pixel_mm2
    top = int(np.argmax(area[: start + 1]))
    waist = top + int(np.argmin(area[top: start + 1]))
    widest, narrowest = area[top], area[waist]
    for s in range(start + 1, len(area)):
        if 0 < widest and narrowest <= WAIST_FRACTION * widest and area[s] >= WAIST_RATIO * narrowest \
                and area[s] - narrowest >= gain:
            opens = waist + int(np.flatnonzero(area[waist:] > 0)[0])
            return waist, waist + 1 if narrowest > 0 else opens
        if area[s] > widest:
            widest = narrowest = area[s]
            waist = s
        elif area[s] < narrowest:
            narrowest, waist = area[s], s
    return None


def _apical_cap(labels: np.ndarray, spacing_mm: float, init_slice: int) -> dict[str, np.ndarray]:
    """Remove (in place) what lies past the LV cavity's apical cap (module docstring)."""
    cavity = np.flatnonzero((labels == LV_POOL).any(axis=(1, 2)))
    cavity = cavity[cavity >= max(init_slice, 0)]
    if len(cavity) == 0:
        return {"heart": np.zeros(labels.shape, bool)}
    end = int(cavity[-1])
    limit = min(len(labels), end + 1 + int(np.floor(CAP_MM / spacing_mm)))
    grow = 1 + GROWTH_PER_MM * spacing_mm
    for s in range(end + 1, limit):
        heart, prev = labels[s] > 0, labels[s - 1] > 0
        if not heart.any():
            return {"heart": np.zeros(labels.shape, bool)}
        outside = heart & (ndimage.distance_transform_edt(~prev) > 1.5) if prev.any() else heart
        if outside.sum() > CAP_STRAY * heart.sum() or heart.sum() > grow * prev.sum():
            limit = s
            break
    return {"heart": _cut_from(labels, limit)}


def _cut_from(labels: np.ndarray, first: int) -> np.ndarray:
    """Remove (in place) every label on slices ``first`` onward; returns what was removed."""
    cut = np.zeros(labels.shape, bool)
    cut[first:] = labels[first:] > 0
    labels[first:] = 0
    return cut


def _apical_growth(labels: np.ndarray, spacing_mm: float, init_slice: int) -> dict[str, np.ndarray]:
    """Remove (in place) what makes a section outgrow the previous one toward the apex: more
    than one pixel outside it, or larger than the rule allows (module docstring): the whole
    heart never widens again beyond ``REWIDEN`` of its narrowest section so far; the RV pool
    may widen again up to its largest section basal of it (an end-systolic RV narrows and
    widens below the base; a blob in the liver outgrows the whole heart)."""
    select = {"heart": lambda a: a > 0, "rv_pool": lambda a: a == RV_POOL}
    removed = {name: np.zeros(labels.shape, bool) for name in select}
    grow = 1 + GROWTH_PER_MM * spacing_mm
    start = max(init_slice, 0)
    largest = int(max(((labels[k] == RV_POOL).sum() for k in range(start + 1)), default=0))
    narrowest = int((labels[start] > 0).sum()) if start < len(labels) else 0
    for s in range(start + 1, len(labels)):
        limits = {"heart": (1 + REWIDEN) * narrowest,
                  "rv_pool": max(grow * (labels[s - 1] == RV_POOL).sum(), largest)}
        for name, f in select.items():
            mask, prev = f(labels[s]), f(labels[s - 1])
            if mask.any():
                cut = _outgrowth(mask, prev, limits[name])
                if cut.any():
                    labels[s][cut] = 0
                    removed[name][s] = cut
        largest = max(largest, int((labels[s] == RV_POOL).sum()))
        narrowest = min(narrowest, int((labels[s] > 0).sum()))
    return removed


def _outgrowth(mask: np.ndarray, prev: np.ndarray, limit: float) -> np.ndarray:
    """The pixels of ``mask`` beyond one pixel of ``prev``, then the farthest from ``prev``
    until ``mask`` holds at most ``limit`` pixels."""
    if not prev.any():
        return mask.copy()
    dist = ndimage.distance_transform_edt(~prev)
    cut = mask & (dist > 1.5)
    keep = mask & ~cut
    excess = int(keep.sum() - np.floor(limit))
    if excess > 0:
        outside = np.flatnonzero(keep & (dist > 0))
        order = outside[np.argsort(-dist.ravel()[outside], kind="stable")][:excess]
        cut.ravel()[order] = True
    return cut


def _apical_fragments(labels: np.ndarray, spacing_mm: float, init_slice: int) -> dict[str, np.ndarray]:
    """Remove (in place) apical tissue joined to the heart's body only by thin strands."""
    heart = labels > 0
    r = max(1, int(round(FRAGMENT_MM / spacing_mm)))
    ball = np.sum((np.indices((2 * r + 1,) * 3) - r) ** 2, axis=0) <= r * r
    body = ndimage.binary_opening(heart, ball)
    pieces, n = ndimage.label(body)
    if n == 0:
        return {"heart": np.zeros(labels.shape, bool)}
    sizes = ndimage.sum(body, pieces, range(1, n + 1))
    main = pieces == 1 + int(np.argmax(sizes))
    keep = ndimage.binary_dilation(main, ball, iterations=2) & heart
    cut = heart & ~keep
    cut[: max(init_slice, 0) + 1] = False
    labels[cut] = 0
    return {"heart": cut}
