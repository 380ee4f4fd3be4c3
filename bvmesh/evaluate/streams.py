"""Streams of case results from files: score existing predictions, or segment, then score.

:func:`iter_file_cases` loads and scores the pairs :func:`~.pairing.find_pairs` found;
:func:`segment_and_score` runs :func:`bvmesh.segment` on the images
:func:`~.pairing.find_image_cases` found and scores each against its ground truth. Both
yield one :class:`~.scoring.CaseResult` per pair, lazily, so that a caller can report
progress; a case that cannot be scored is a ``failed`` (or ``missing_prediction``) result,
and the stream goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import io as bio
from .. import metrics
from ..errors import BvmeshError
from ..labels import parse_label_map
from .pairing import LABELS_STEM, CasePair, check_same_grid, load_labels
from .scoring import ISOTROPIC_MM, MISSING, CaseResult, failed_result, score_case, scored_structures


def iter_file_cases(pairs: Sequence[CasePair], *, labels: str = "bvmesh",
                    pred_labels: str = "bvmesh", structures: Sequence[str] | None = None,
                    isotropic_mm: float | None = ISOTROPIC_MM) -> Iterator[CaseResult]:
    """Load and score each pair that has a ground truth, one by one."""
    gt_map, pred_map = parse_label_map(labels), parse_label_map(pred_labels)
    if structures is None:
        structures = scored_structures(gt_map, pred_map)
    for pair in pairs:
        if pair.gt is None:
            continue
        paths = {"pred": str(pair.pred) if pair.pred else None, "gt": str(pair.gt)}
        if pair.problem:
            yield failed_result(pair.case, pair.problem, **paths)
            continue
        if pair.pred is None:
            yield failed_result(pair.case, f"no prediction for ground truth {pair.gt}", MISSING,
                                **paths)
            continue
        try:
            g, g_aff = load_labels(pair.gt, gt_map)
            p, p_aff = load_labels(pair.pred, pred_map)
            check_same_grid(pair.pred, p, p_aff, pair.gt, g, g_aff)
            result = score_case(p, g, g_aff, case=pair.case, structures=structures,
                                isotropic_mm=isotropic_mm)
        except BvmeshError as exc:
            yield failed_result(pair.case, str(exc), **paths)
            continue
        result.pred, result.gt = paths["pred"], paths["gt"]
        yield result


def segment_and_score(
    pairs: Sequence[CasePair], *, weights: str | Path | None = None, labels: str = "acdc",
    device: str = "auto", propagation: bool = True, fusion: bool = True, base_from_gt: bool = False,
    plausibility: bool = True, isotropic_mm: float | None = ISOTROPIC_MM, save_dir: str | Path | None = None,
    segment_fn: Callable | None = None, model=None,
) -> Iterator[CaseResult]:
    """Segment each image with :func:`bvmesh.segment` and score it against its ground truth.

    ``pairs`` come from :func:`find_image_cases`. The model is loaded once (``weights``:
    registry name, path or URL; None: the default). ``base_from_gt`` passes the ground
    truth's base slice, as the paper's manual base. ``save_dir`` receives
    ``<case>/labels.nii.gz`` (the layout PRED accepts, to score again without
    segmenting). ``segment_fn`` and ``model`` replace the pipeline (tests, other models).
    """
    gt_map = parse_label_map(labels)
    structures = scored_structures(gt_map, parse_label_map("bvmesh"))
    if segment_fn is None:
        from ..pipeline import load_weights, segment

        segment_fn = segment
        if model is None:
            model, _ = load_weights(weights, device)
    for pair in pairs:
        paths = {"pred": None, "gt": str(pair.gt)}
        if pair.problem or pair.pred is None or pair.gt is None:
            yield failed_result(pair.case, pair.problem or "no image", **paths)
            continue
        try:
            gt, gt_affine = load_labels(pair.gt, gt_map)
            base = None
            if base_from_gt and gt.any():
                spacing = metrics.voxel_spacing(gt_affine)
                axis = metrics.slice_axis(spacing, gt.shape)
                base = metrics.labelled_range(gt > 0, axis).base
            t0 = time.perf_counter()
            seg = segment_fn(pair.pred, model=model, device=device, propagation=propagation,
                             fusion=fusion, base_slice=base, plausibility=plausibility)
            seconds = time.perf_counter() - t0
            pred = np.asarray(seg.labels)
            check_same_grid(pair.pred, pred, seg.volume.affine, pair.gt, gt, gt_affine)
            if save_dir is not None:
                out = Path(save_dir) / pair.case / f"{LABELS_STEM}.nii.gz"
                out.parent.mkdir(parents=True, exist_ok=True)
                bio.save_like(pred, seg.volume, out)
                paths["pred"] = str(out)
            result = score_case(pred, gt, gt_affine, case=pair.case, structures=structures,
                                isotropic_mm=isotropic_mm)
        except BvmeshError as exc:
            yield failed_result(pair.case, str(exc), **paths)
            continue
        result.pred, result.gt = paths["pred"], paths["gt"]
        result.segment_seconds = seconds
        qc = getattr(seg, "report", {}).get("qc", {})
        result.qc = qc.get("verdict", "")
        result.qc_checks = ";".join(qc.get("failed", []) + qc.get("warned", []))
        result.base_pred = getattr(seg, "report", {}).get("slices", {}).get("base_slice")
        result.removed = "; ".join(f"{r['rule']} {r['structure']} {r['ml']:g}"
                                   for r in getattr(seg, "report", {}).get("plausibility", []))
        yield result
