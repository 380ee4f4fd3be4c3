"""Scoring predicted label maps against ground truth: pairing, per-case scores, summaries.

Scoring works on arrays: :func:`score_case` takes a predicted and a ground-truth label
map (bvmesh labels, same grid) and the grid's affine, and does not care where the
prediction came from. :func:`score_predictions` scores a stream of such pairs (from
files, or straight from :func:`bvmesh.segment`); :func:`evaluate` pairs files or folders
and scores them; :func:`write_results` writes ``cases.csv``, ``slices.csv``,
``summary.json``, ``results.md`` and the plots. :func:`plan_folds` and
:func:`segment_and_score_folds` score only the subjects a model never saw in training
(``--held-out``), or each cross-validation fold's model on its own held-out subjects,
pooled (``--folds K``). :func:`run_evaluation` does all of it as `bvmesh evaluate` does.

What is scored, per case and structure (lv_pool 1, lv_myo 2, rv_pool 3, rv_myo 4 and
the biventricular myocardium bv_myo = 2 ∪ 4):

- only the slices the ground truth labels (its first to last labelled slice along the
  slice axis, the voxel axis of largest spacing). Predicted voxels on other slices are
  reported as ``outside_ml``, never mixed into the scores;
- Dice, HD (max), HD95 and ASSD in mm (see :mod:`bvmesh.metrics`), volumes and their
  error (pred - gt) in ml, LV mass in g, slice-wise Dice from base to apex and its
  3D-consistency figure (mean |jump| between neighbouring slices), and Dice on an
  isotropic grid (one-hot linear interpolation, 1.25 mm) between base and apex slice;
- a structure the ground truth's label map lacks (RV myocardium in ACDC), or that a
  case's ground truth does not contain, is n/a: not scored, not averaged.

The modules, each using only those above it: :mod:`.scoring` (arrays to scores),
:mod:`.pairing` (files to cases), :mod:`.streams` (score or segment-and-score the
cases), :mod:`.folds` (held-out subjects), :mod:`.summary` (an :class:`Evaluation` and
its statistics), :mod:`.plots` and :mod:`.report` (what is written), :mod:`.run` (the
whole evaluation). This module only re-exports their public names.
"""

from __future__ import annotations

from .folds import (
    Fold,
    case_subjects,
    fold_weights,
    plan_folds,
    recorded_held_out,
    segment_and_score_folds,
)
from .pairing import CasePair, find_image_cases, find_pairs, load_labels
from .report import TABLE_METRICS, cell, fmt, write_results
from .run import EvaluationPlan, check_run_options, evaluate, run_evaluation
from .scoring import (
    EMPTY,
    FAILED,
    ISOTROPIC_MM,
    METRICS,
    MISSING,
    OK,
    SHORT,
    STRUCTURES,
    TITLES,
    CaseResult,
    metric_value,
    score_case,
    score_predictions,
    scored_structures,
    structures_provided,
)
from .streams import iter_file_cases, segment_and_score
from .summary import Evaluation

__all__ = [
    "CasePair", "CaseResult", "EMPTY", "Evaluation", "EvaluationPlan", "FAILED", "Fold",
    "ISOTROPIC_MM", "METRICS", "MISSING", "OK", "SHORT", "STRUCTURES", "TABLE_METRICS",
    "TITLES", "case_subjects", "cell", "check_run_options", "evaluate", "find_image_cases",
    "find_pairs", "fold_weights", "fmt", "iter_file_cases", "load_labels", "metric_value",
    "plan_folds", "recorded_held_out", "run_evaluation", "score_case", "score_predictions",
    "scored_structures", "segment_and_score", "segment_and_score_folds",
    "structures_provided", "write_results",
]
