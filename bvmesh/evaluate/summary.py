"""One run's cases as an :class:`Evaluation`, and its summary: the numbers of summary.json.

:func:`summarise` gives mean, median, std, quartiles and IQR per structure and metric
over the scored cases, Bland-Altman agreement of volumes and LV mass, case counts and
problems; :func:`fold_summaries` the same means per held-out fold. Undefined values
(nan) become None, so the summary is valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from .folds import Fold
from .pairing import CasePair
from .scoring import (
    EMPTY,
    FAILED,
    ISOTROPIC_MM,
    MISSING,
    OK,
    SUMMARY_METRICS,
    CaseResult,
    metric_value,
)


@dataclass
class Evaluation:
    """All cases of one run, their settings, and what could not be paired."""

    cases: list[CaseResult]
    structures: tuple[str, ...]
    labels: str = "bvmesh"
    pred_labels: str = "bvmesh"
    unpaired: list[CasePair] = field(default_factory=list)
    isotropic_mm: float | None = ISOTROPIC_MM
    #: The held-out plans scored (``--held-out``: one with index None; ``--folds K``: K).
    folds: list[Fold] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when any case failed, lacked a prediction or had an empty one, else 0."""
        return 0 if all(c.status == OK for c in self.cases) else 1

    def summary(self) -> dict:
        return summarise(self)



def _stats(values: Sequence[float], n_cases: int) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return {"n": 0, "n_na": n_cases}
    q1, q3 = np.percentile(v, [25, 75])
    return {"mean": float(v.mean()), "median": float(np.median(v)),
            "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v)),
            "n_na": int(n_cases - len(v))}


def _agreement(pred: Sequence[float], gt: Sequence[float]) -> dict:
    """Bland-Altman bias and 95% limits of agreement of pred - gt."""
    d = np.asarray(pred, float) - np.asarray(gt, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return {"n": 0}
    sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    bias = float(d.mean())
    return {"n": int(len(d)), "bias": bias, "sd": sd,
            "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}



def summarise(ev: Evaluation) -> dict:
    """Mean, median, std, quartiles and IQR per structure and metric, plus counts.

    ``n`` counts the values averaged; ``n_na`` the scored cases where the value is
    undefined (e.g. HD of an empty prediction) or the structure was n/a.
    """
    scored = [c for c in ev.cases if c.scored]
    counts = {s: sum(c.status == s for c in ev.cases) for s in (OK, EMPTY, FAILED, MISSING)}
    counts["cases"] = len(ev.cases)
    counts["scored"] = len(scored)
    counts["unpaired_predictions"] = len(ev.unpaired)
    out: dict = {
        "bvmesh_version": __version__, "labels": ev.labels, "pred_labels": ev.pred_labels,
        "isotropic_mm": ev.isotropic_mm, "counts": counts, "structures": {},
    }
    for name in ev.structures:
        out["structures"][name] = {
            m: _stats([metric_value(c, name, m) for c in scored], len(scored))
            for m in SUMMARY_METRICS}
        out["structures"][name]["volume_agreement_ml"] = _agreement(
            [metric_value(c, name, "vol_pred_ml") for c in scored],
            [metric_value(c, name, "vol_gt_ml") for c in scored])
    if "lv_myo" in ev.structures:
        out["lv_mass_g"] = {
            "gt": _stats([c.lv_mass_gt_g for c in scored], len(scored)),
            "pred": _stats([c.lv_mass_pred_g for c in scored], len(scored)),
            "agreement": _agreement([c.lv_mass_pred_g for c in scored],
                                    [c.lv_mass_gt_g for c in scored]),
        }
    out["seconds_per_case"] = _stats([c.seconds for c in scored], len(scored))
    if any(math.isfinite(c.segment_seconds) for c in scored):
        out["segment_seconds_per_case"] = _stats([c.segment_seconds for c in scored],
                                                 len(scored))
    if ev.folds:
        out["folds"] = fold_summaries(ev)
    out["problems"] = [{"case": c.case, "status": c.status, "message": "; ".join(c.messages)}
                       for c in ev.cases if c.status != OK]
    out["unpaired_predictions"] = [str(p.pred) for p in ev.unpaired]
    return _json_safe(out)


def fold_summaries(ev: Evaluation) -> list[dict]:
    """Per fold (or the one ``--held-out`` model): its weights, held-out subjects, case
    counts and the mean of each summary metric over its scored cases (None: no value)."""
    out = []
    for fold in ev.folds:
        mine = [c for c in ev.cases if c.fold == fold.index]
        scored = [c for c in mine if c.scored]
        entry = {"fold": fold.index, "weights": fold.weights,
                 "held_out_subjects": list(fold.subjects),
                 "cases": len(mine), "scored": len(scored), "structures": {}}
        for name in ev.structures:
            entry["structures"][name] = {
                m: _stats([metric_value(c, name, m) for c in scored], len(scored)).get("mean")
                for m in SUMMARY_METRICS}
        out.append(entry)
    return out


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
