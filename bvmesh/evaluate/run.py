"""A whole evaluation, from the files to the written results: what `bvmesh evaluate` runs.

:func:`evaluate` pairs, loads and scores prediction and ground-truth files or folders
into an :class:`~.summary.Evaluation`. :func:`run_evaluation` is the command's library
side: it checks the options, chooses the cases (PRED GT files, or ``--cases`` images to
segment first, optionally only those held out in training), loads the model(s), scores
every case and writes the results. It never prints: it tells the caller what it is about
to score (``on_plan``), each result (``on_case``) and when scoring is done
(``on_scored``), and raises :class:`~bvmesh.errors.BvmeshError` for what stops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..labels import parse_label_map
from .folds import Fold, fold_weights, plan_folds, recorded_held_out, segment_and_score_folds
from .pairing import CasePair, find_image_cases, find_pairs
from .report import write_results
from .scoring import ISOTROPIC_MM, CaseResult, scored_structures
from .streams import iter_file_cases, segment_and_score
from .summary import Evaluation


def _shared_structures(labels: str, pred_labels: str) -> tuple[str, ...]:
    """The structures both label maps provide; InputError when there is none."""
    structures = scored_structures(parse_label_map(labels), parse_label_map(pred_labels))
    if not structures:
        raise InputError(f"label maps {labels!r} (ground truth) and {pred_labels!r} "
                         "(prediction) share no structure to score")
    return structures


def evaluate(pred: str | Path, gt: str | Path, *, labels: str = "bvmesh",
             pred_labels: str = "bvmesh", isotropic_mm: float | None = ISOTROPIC_MM,
             on_case: Callable[[CaseResult], None] | None = None) -> Evaluation:
    """Pair, load and score prediction and ground-truth files or folders.

    ``labels`` / ``pred_labels`` name the label maps (acdc, mnms, binary, bvmesh, or
    "1=rv_pool,2=lv_myo,3=lv_pool"). ``on_case`` is called after each case (progress).
    Bad cases are recorded as failed; only unusable arguments raise.
    """
    structures = _shared_structures(labels, pred_labels)
    pairs = find_pairs(pred, gt)
    cases = []
    for result in iter_file_cases(pairs, labels=labels, pred_labels=pred_labels,
                                  structures=structures, isotropic_mm=isotropic_mm):
        cases.append(result)
        if on_case is not None:
            on_case(result)
    return Evaluation(cases, structures, labels, pred_labels,
                      [p for p in pairs if p.gt is None], isotropic_mm)


@dataclass(frozen=True)
class EvaluationPlan:
    """What :func:`run_evaluation` is about to score, given to ``on_plan`` before any case.

    ``total``: the cases it scores (one result each); ``found``: the cases it found
    (``--cases``: every ground truth of DATA_DIR, held out or not); ``segmenting``: each
    case is segmented before it is scored (``--cases``); ``unpaired``: predictions
    without ground truth, not scored; ``folds``: the held-out plans (``--held-out``: one
    with index None; ``--folds K``: K; else none); ``warnings``: what planning them found
    (held-out subjects absent from DATA_DIR, subjects no fold holds out).
    """

    total: int
    found: int
    segmenting: bool
    unpaired: tuple[CasePair, ...] = ()
    folds: tuple[Fold, ...] = ()
    warnings: tuple[str, ...] = ()


def check_run_options(pred: str | Path | None = None, gt: str | Path | None = None, *,
                      cases: str | Path | None = None, weights: str | Path | None = None,
                      held_out: bool = False, folds: int | None = None) -> None:
    """Raise :class:`InputError` unless the options of :func:`run_evaluation` go together.

    Either PRED and GT, or ``cases``; ``held_out`` and ``folds`` only with ``cases``;
    ``folds`` only with ``weights`` (the run folder). Checked before anything is read.
    """
    if cases is not None and (pred is not None or gt is not None):
        raise InputError("give either PRED GT or --cases DATA_DIR, not both")
    if cases is None and (pred is None or gt is None):
        raise InputError("give PRED and GT (files or folders), or --cases DATA_DIR")
    if cases is None and (held_out or folds is not None):
        raise InputError("--held-out and --folds go with --cases DATA_DIR")
    if folds is not None and weights is None:
        raise InputError("--folds K needs --weights RUN_DIR (the folder of "
                         "`bvmesh train --fold all -o RUN_DIR`)")


def run_evaluation(
    pred: str | Path | None = None, gt: str | Path | None = None, *,
    cases: str | Path | None = None, output: str | Path = "results", labels: str = "bvmesh",
    pred_labels: str = "bvmesh", isotropic_mm: float | None = ISOTROPIC_MM, plots: bool = True,
    weights: str | Path | None = None, held_out: bool = False, folds: int | None = None,
    device: str = "auto", propagation: bool = True, fusion: bool = True,
    plausibility: bool = True, base_from_gt: bool = False,
    on_plan: Callable[[EvaluationPlan], None] | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
    on_scored: Callable[[], None] | None = None,
) -> tuple[Evaluation, list[Path]]:
    """Score PRED against GT, or segment and score ``cases``, and write the results.

    PRED GT: prediction and ground-truth files or folders, as :func:`evaluate` pairs
    them. ``cases``: a folder of images with ``<case>_gt`` label maps beside them (ACDC
    layout); each image is segmented with ``weights`` (name, file or URL; None: the
    bundled model) on ``device``, with ``propagation``, ``fusion``, ``plausibility`` and
    ``base_from_gt`` as in :func:`~.streams.segment_and_score`, its prediction saved to
    ``output/predictions/<case>/labels.nii.gz`` (``pred_labels`` is then bvmesh).
    ``held_out``: only the cases of the subjects ``weights`` never saw in training;
    ``folds`` K: ``weights`` is a ``bvmesh train --fold all`` run folder and each fold's
    model scores its own held-out subjects, pooled. ``isotropic_mm`` 0 or None skips the
    isotropic Dice; ``plots`` False skips the PNG plots.

    The callbacks report progress: ``on_plan`` once before the first case,
    ``on_case`` after each, ``on_scored`` after the last, before the results are
    written. Returns the evaluation and the files written to ``output``. Raises
    :class:`~bvmesh.errors.BvmeshError` (InputError for options that do not go
    together, see :func:`check_run_options`; WeightsError for missing or unusable
    models) before writing anything; bad cases are recorded as failed instead.
    """
    check_run_options(pred, gt, cases=cases, weights=weights, held_out=held_out, folds=folds)
    iso = isotropic_mm or None
    if cases is not None:
        pred_labels = "bvmesh"
    structures = _shared_structures(labels, pred_labels)
    if cases is not None:
        options = dict(labels=labels, device=device, propagation=propagation, fusion=fusion,
                       plausibility=plausibility, base_from_gt=base_from_gt, isotropic_mm=iso,
                       save_dir=Path(output) / "predictions")
        plan, stream = _segmenting_plan(cases, weights, held_out, folds, options)
    else:
        plan, stream = _files_plan(pred, gt, labels, pred_labels, structures, iso)
    if on_plan is not None:
        on_plan(plan)
    results = []
    for result in stream:
        results.append(result)
        if on_case is not None:
            on_case(result)
    if on_scored is not None:
        on_scored()
    evaluation = Evaluation(results, structures, labels, pred_labels, list(plan.unpaired), iso,
                            list(plan.folds))
    return evaluation, write_results(evaluation, output, plots=plots)


def _files_plan(pred: str | Path, gt: str | Path, labels: str, pred_labels: str,
                structures: Sequence[str], isotropic_mm: float | None
                ) -> tuple[EvaluationPlan, Iterator[CaseResult]]:
    """PRED GT: the pairs with a ground truth are scored, predictions without one noted."""
    pairs = find_pairs(pred, gt)
    todo = [p for p in pairs if p.gt is not None]
    unpaired = tuple(p for p in pairs if p.gt is None)
    stream = iter_file_cases(todo, labels=labels, pred_labels=pred_labels,
                             structures=structures, isotropic_mm=isotropic_mm)
    return EvaluationPlan(len(todo), len(todo), False, unpaired), stream


def _segmenting_plan(data_dir: str | Path, weights: str | Path | None, held_out: bool,
                     folds: int | None, options: dict
                     ) -> tuple[EvaluationPlan, Iterator[CaseResult]]:
    """``--cases``: every case of ``data_dir``, or (``held_out``, ``folds``) those held out.

    Without a held-out selection the model is loaded lazily, on the stream's first case.
    """
    todo = find_image_cases(data_dir)
    if folds is None and not held_out:
        stream = segment_and_score(todo, weights=weights, **options)
        return EvaluationPlan(len(todo), len(todo), True), stream
    plan, models, warnings = _held_out_plan(data_dir, todo, weights, folds, options["device"])
    stream = segment_and_score_folds(plan, models, **options)
    return EvaluationPlan(sum(len(f.pairs) for f in plan), len(todo), True, (), tuple(plan),
                          tuple(warnings)), stream


def _held_out_plan(data_dir: str | Path, pairs: Sequence[CasePair], weights: str | Path | None,
                   folds: int | None, device: str) -> tuple[list[Fold], list, list[str]]:
    """Load the model(s) once each, read their held-out subjects and assign the cases.

    Returns (folds, models, warnings).
    """
    from ..pipeline import load_weights

    if folds is not None:
        paths = fold_weights(weights, folds)  # every fold present before any loading
        sources = [str(p) for p in paths]
        models = [load_weights(src, device)[0] for src in sources]
    else:
        model, info = load_weights(weights, device)
        sources, models = [weights or info["name"] or info["path"]], [model]
    held = [(src, recorded_held_out(m, src)) for src, m in zip(sources, models)]
    plan, warnings = plan_folds(data_dir, pairs, held, indexed=folds is not None)
    return plan, models, warnings
