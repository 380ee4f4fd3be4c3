"""Scoring one predicted label map against its ground truth, on arrays.

What is scored (:data:`STRUCTURES`, :data:`METRICS`), the case statuses, and
:func:`score_case`, which takes a predicted and a ground-truth label map (bvmesh labels,
same grid) and the grid's affine and does not care where the prediction came from;
:func:`score_predictions` scores a stream of such pairs. Nothing here reads files: the
other modules of :mod:`bvmesh.evaluate` bring the arrays and use the results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import metrics
from ..errors import BvmeshError, InputError
from ..labels import CLASS_NAMES, LV_MYO

#: Scored structures and the bvmesh labels each one is made of.
STRUCTURES: dict[str, tuple[int, ...]] = {
    "lv_pool": (1,), "lv_myo": (2,), "rv_pool": (3,), "rv_myo": (4,), "bv_myo": (2, 4),
}
TITLES: dict[str, str] = {
    "lv_pool": "LV blood pool", "lv_myo": "LV myocardium", "rv_pool": "RV blood pool",
    "rv_myo": "RV myocardium", "bv_myo": "BV myocardium",
}
SHORT: dict[str, str] = {"lv_pool": "LV pool", "lv_myo": "LV myo", "rv_pool": "RV pool",
                         "rv_myo": "RV myo", "bv_myo": "BV myo"}
#: Per-structure columns of cases.csv, in order. Distances in mm, volumes in ml.
METRICS: tuple[str, ...] = ("dice", "hd95_mm", "hd_mm", "assd_mm", "vol_gt_ml", "vol_pred_ml",
                            "vol_err_ml", "outside_ml", "consistency", "dice_iso")
#: Metrics summarised in summary.json and the tables.
SUMMARY_METRICS: tuple[str, ...] = ("dice", "hd95_mm", "hd_mm", "assd_mm", "vol_err_ml",
                                    "abs_vol_err_ml", "outside_ml", "consistency", "dice_iso")
#: Case status: scored cleanly; scored but the prediction is empty; not scored.
OK, EMPTY, FAILED, MISSING = "ok", "empty_prediction", "failed", "missing_prediction"
ISOTROPIC_MM = 1.25


def structures_provided(mapping: dict[int, str]) -> tuple[str, ...]:
    """The structures a label map lets us score.

    A map that names only ``lv_myo`` (``binary``) is a myocardium-only map: its one
    label is the biventricular myocardium, so only ``bv_myo`` is scored with it.
    ``bv_myo`` otherwise needs both myocardium classes.
    """
    names = set(mapping.values())
    if names == {"lv_myo"}:
        return ("bv_myo",)
    out = [c for c in CLASS_NAMES if c in names]
    if {"lv_myo", "rv_myo"} <= names:
        out.append("bv_myo")
    return tuple(out)


def scored_structures(gt_map: dict[int, str], pred_map: dict[int, str]) -> tuple[str, ...]:
    """Structures both label maps provide, in STRUCTURES order."""
    both = set(structures_provided(gt_map)) & set(structures_provided(pred_map))
    return tuple(s for s in STRUCTURES if s in both)


@dataclass
class CaseResult:
    """Scores of one case. ``scores[structure][metric]`` holds floats (nan: undefined);
    a structure that was not scored for this case is absent from ``scores``."""

    case: str
    status: str
    messages: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    lv_mass_gt_g: float = math.nan
    lv_mass_pred_g: float = math.nan
    slice_range: metrics.SliceRange | None = None
    slice_mm: float = math.nan
    #: Slice-wise Dice per structure, from base to apex (``slice_range.order``).
    slice_dice: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    #: Time bvmesh.segment took on this case (``--cases`` mode), nan otherwise.
    segment_seconds: float = math.nan
    #: bvmesh.segment's QC verdict and the checks that warned or failed (``--cases``).
    qc: str = ""
    qc_checks: str = ""
    #: What bvmesh.segment's plausibility rules removed, "rule structure ml; ..." (``--cases``).
    removed: str = ""
    #: The base slice bvmesh.segment used (detected, or the labels' when given), ``--cases``.
    base_pred: int | None = None
    pred: str | None = None
    gt: str | None = None
    #: Cross-validation fold whose model segmented this case (``--folds``), else None.
    fold: int | None = None

    @property
    def scored(self) -> bool:
        return self.status in (OK, EMPTY)


def failed_result(case: str, message: str, status: str = FAILED, **paths) -> CaseResult:
    """A case that was not scored (``failed``, or ``status``), with the reason."""
    return CaseResult(case, status, [message], **paths)


def metric_value(case: CaseResult, structure: str, metric: str) -> float:
    """One number of a case (nan when not scored); ``abs_vol_err_ml`` is derived."""
    s = case.scores.get(structure)
    if s is None:
        return math.nan
    if metric == "abs_vol_err_ml":
        return abs(s["vol_err_ml"])
    return s[metric]


def score_case(pred: np.ndarray, gt: np.ndarray, affine: np.ndarray, *, case: str = "case",
               structures: Sequence[str] = tuple(STRUCTURES),
               isotropic_mm: float | None = ISOTROPIC_MM) -> CaseResult:
    """Score one predicted label map against its ground truth (bvmesh labels, same grid).

    ``affine`` maps voxel indices to world mm and gives the physical spacing.
    ``structures`` are those both label maps provide (see :func:`structures_provided`).
    ``isotropic_mm`` (None or 0: skip) is the grid step of the isotropic Dice.
    Raises :class:`InputError` when the pair cannot be scored (shapes differ, labels
    outside 0..4, empty ground truth).
    """
    t0 = time.perf_counter()
    pred, gt, affine = _checked_arrays(pred, gt, affine, case, structures)
    result = CaseResult(case, OK if pred.any() else EMPTY)
    if result.status == EMPTY:
        result.messages.append("the prediction is empty (every voxel is background)")
    if metrics.shear(affine) > 1e-3:
        result.messages.append(f"voxel axes are not orthogonal (|cos| {metrics.shear(affine):.3g});"
                               " distances treat them as orthogonal")
    spacing = metrics.voxel_spacing(affine)
    axis = metrics.slice_axis(spacing, gt.shape)
    rng = metrics.labelled_range(gt > 0, axis)
    result.slice_range, result.slice_mm = rng, float(spacing[axis])
    inside = [slice(None)] * 3
    inside[axis] = slice(rng.lo, rng.hi + 1)
    inside = tuple(inside)
    p_in, g_in = pred[inside], gt[inside]
    outside = pred.copy()
    outside[inside] = 0
    if outside.any():
        n_out = int(np.count_nonzero(metrics._per_slice(outside > 0, axis)))
        result.messages.append(
            f"prediction labels {metrics.volume_ml(outside > 0, affine):.2f} ml on {n_out} "
            f"slice(s) outside the ground truth's slices {rng.lo}..{rng.hi}: reported as "
            "outside_ml, not scored")
    order = rng.order - rng.lo
    for name in structures:
        _score_structure(result, name, p_in, g_in, outside, affine, spacing, axis, order)
    if "lv_myo" in result.scores:
        result.lv_mass_gt_g = metrics.lv_mass_g(g_in == LV_MYO, affine)
        result.lv_mass_pred_g = metrics.lv_mass_g(p_in == LV_MYO, affine)
    if isotropic_mm and result.scores:
        _isotropic_dice(result, pred, gt, affine, axis, rng, isotropic_mm)
    result.seconds = time.perf_counter() - t0
    return result


def _checked_arrays(pred: np.ndarray, gt: np.ndarray, affine: np.ndarray, case: str,
                    structures: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` as uint8 and ``affine`` as float, once they can be scored.

    Raises :class:`InputError` for a pair that cannot be, ValueError for unknown
    ``structures`` (a caller's bug, not the data's).
    """
    pred, gt, affine = np.asarray(pred), np.asarray(gt), np.asarray(affine, float)
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise InputError(f"{case}: prediction shape {pred.shape} differs from ground truth "
                         f"shape {gt.shape}; put the prediction on the ground truth's grid")
    for role, arr in (("prediction", pred), ("ground truth", gt)):
        bad = np.setdiff1d(np.unique(arr), np.arange(len(CLASS_NAMES) + 1))
        if len(bad):
            raise InputError(f"{case}: {role} holds values {bad.tolist()[:8]} that are not "
                             "bvmesh labels 0-4; translate it with --labels/--pred-labels")
    unknown = set(structures) - set(STRUCTURES)
    if unknown:
        raise ValueError(f"unknown structures {sorted(unknown)}; use {list(STRUCTURES)}")
    pred, gt = pred.astype(np.uint8, copy=False), gt.astype(np.uint8, copy=False)
    if not gt.any():
        raise InputError(f"{case}: the ground truth labels no voxel; nothing to score")
    return pred, gt, affine


def _score_structure(result: CaseResult, name: str, p_in: np.ndarray, g_in: np.ndarray,
                     outside: np.ndarray, affine: np.ndarray, spacing: np.ndarray, axis: int,
                     order: np.ndarray) -> None:
    """Score structure ``name`` on the ground truth's slices (``p_in``, ``g_in``) into
    ``result``; one absent from the ground truth is n/a (a message, no scores)."""
    labels = STRUCTURES[name]
    mp, mg = np.isin(p_in, labels), np.isin(g_in, labels)
    if not mg.any():
        result.messages.append(f"{name}: absent from the ground truth; n/a")
        return
    if not mp.any() and result.status == OK:
        result.messages.append(f"{name}: absent from the prediction")
    surf = metrics.surface_scores(mp, mg, spacing)
    vol_p, vol_g = metrics.volume_ml(mp, affine), metrics.volume_ml(mg, affine)
    curve = metrics.slicewise_dice(mp, mg, axis, order)
    result.slice_dice[name] = curve
    result.scores[name] = {
        "dice": metrics.dice(mp, mg), "hd95_mm": surf.hd95, "hd_mm": surf.hd,
        "assd_mm": surf.assd, "vol_gt_ml": vol_g, "vol_pred_ml": vol_p,
        "vol_err_ml": vol_p - vol_g,
        "outside_ml": metrics.volume_ml(np.isin(outside, labels), affine),
        "consistency": metrics.consistency(curve), "dice_iso": math.nan,
    }


def _isotropic_dice(result: CaseResult, pred: np.ndarray, gt: np.ndarray, affine: np.ndarray,
                    axis: int, rng: metrics.SliceRange, step_mm: float) -> None:
    """Dice on an isotropic grid between the base and apex slice centres (the paper's 3D
    Dice "below the base"), in-plane over the box around both label maps."""
    heart = (pred > 0) | (gt > 0)
    idx = np.nonzero(heart)
    box = [(float(i.min()), float(i.max())) for i in idx]
    box[axis] = (float(rng.lo), float(rng.hi))
    names = list(result.scores)
    masks = [m for name in names for m in (np.isin(pred, STRUCTURES[name]),
                                           np.isin(gt, STRUCTURES[name]))]
    iso = metrics.isotropic_masks(masks, affine, box=tuple(box), spacing_mm=step_mm)
    for n, name in enumerate(names):
        result.scores[name]["dice_iso"] = metrics.dice(iso[2 * n], iso[2 * n + 1])


def score_predictions(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]], *,
    structures: Sequence[str] = tuple(STRUCTURES), isotropic_mm: float | None = ISOTROPIC_MM,
) -> Iterator[CaseResult]:
    """Score ``(case, pred_labels, gt_labels, affine)`` tuples one by one, lazily.

    Arrays hold bvmesh labels on the same grid. A pair that cannot be scored yields a
    ``failed`` result with the reason; the stream goes on.
    """
    for case, pred, gt, affine in pairs:
        try:
            yield score_case(pred, gt, affine, case=case, structures=structures,
                             isotropic_mm=isotropic_mm)
        except BvmeshError as exc:
            yield failed_result(case, str(exc))
