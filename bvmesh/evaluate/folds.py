"""Held-out evaluation: which model scores which case, so that none scores a case it saw.

``bvmesh train`` records the subjects a model never saw (:func:`recorded_held_out`);
:func:`case_subjects` tells each case's subject by the same rule training used, and
:func:`plan_folds` assigns every case to the model that held its subject out, as one
:class:`Fold` per model (``--held-out``: one model; ``--folds K``: the K fold models of a
``bvmesh train --fold all`` run, found by :func:`fold_weights`).
:func:`segment_and_score_folds` then segments and scores each fold's cases with its own
model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, WeightsError
from .pairing import CasePair
from .scoring import CaseResult
from .streams import segment_and_score

log = logging.getLogger(__name__)


def recorded_held_out(model, source: str | Path) -> tuple[str, ...]:
    """The subjects ``model`` never saw in training, as ``bvmesh train`` records them.

    ``model.record["held_out_subjects"]`` holds subject names (ACDC: the patient folder,
    e.g. ``patient001``). ``source`` names the weights in messages. Raises
    :class:`WeightsError` when the record holds none (``--fold none``, or weights not
    written by ``bvmesh train``).
    """
    record = getattr(model, "record", None) or {}
    subjects = record.get("held_out_subjects")
    if not subjects:
        raise WeightsError(f"{source} was trained on all data; there is nothing held out")
    if not isinstance(subjects, list | tuple) or not all(isinstance(x, str) for x in subjects):
        raise WeightsError(f"{source}: its record's held_out_subjects is not a list of subject "
                           "names; retrain it with bvmesh train")
    return tuple(sorted(set(subjects)))


def case_subjects(data_dir: str | Path, pairs: Sequence[CasePair]) -> dict[str, str]:
    """The subject of each case of ``pairs`` (from :func:`find_image_cases`).

    Subjects are the ones training recorded: :func:`bvmesh.train.data.find_cases` decides
    them (the per-subject folder in ACDC, so ED and ES share one). A ground truth it
    does not list (its image is missing) gets the same rule, so that it still shows up
    among its subject's cases, as failed.
    """
    from ..train.data import find_cases

    data_dir = Path(data_dir)
    try:
        by_label = {c.label.resolve(): c.subject for c in find_cases(data_dir)}
    except InputError:  # no image beside any ground truth: every case fails later anyway
        by_label = {}
    out = {}
    for pair in pairs:
        gt = Path(pair.gt)
        subject = by_label.get(gt.resolve())
        if subject is None:  # dataset.find_cases's rule, for a case it skipped
            subject = gt.parent.name if gt.parent.resolve() != data_dir.resolve() else pair.case
        out[pair.case] = subject
    return out


@dataclass(frozen=True)
class Fold:
    """One model's share of a held-out evaluation.

    ``index``: the fold number (``--folds``), None for a single ``--held-out`` model;
    ``weights``: where its model came from; ``subjects``: its recorded held-out
    subjects; ``pairs``: the cases of DATA_DIR belonging to them, which it segments.
    """

    index: int | None
    weights: str
    subjects: tuple[str, ...]
    pairs: tuple[CasePair, ...]


def fold_weights(run_dir: str | Path, k: int) -> list[Path]:
    """``run_dir/fold0/model.pt`` ... ``fold{k-1}/model.pt`` (``bvmesh train --fold all``).

    Raises :class:`WeightsError` naming the first fold model that is missing, before
    anything is loaded.
    """
    run_dir = Path(run_dir)
    if k < 2:
        raise InputError(f"--folds {k}: cross-validation needs at least 2 folds")
    if not run_dir.is_dir():
        raise WeightsError(f"{run_dir}: not a folder; --folds K takes the run folder of "
                           "`bvmesh train --fold all -o RUN_DIR` (holding fold0/model.pt, ...)")
    paths = [run_dir / f"fold{i}" / "model.pt" for i in range(k)]
    for path in paths:
        if not path.is_file():
            raise WeightsError(f"{path}: missing fold model; train it with `bvmesh train "
                               f"DATA_DIR --folds {k} --fold {path.parent.name[4:]} -o "
                               f"{path.parent}` or pass the right --folds")
    extra = run_dir / f"fold{k}" / "model.pt"
    if extra.is_file():
        log.warning("%s exists but --folds %d scores only fold0..fold%d", extra, k, k - 1)
    return paths


def plan_folds(data_dir: str | Path, pairs: Sequence[CasePair],
               held_out: Sequence[tuple[str, Sequence[str]]], *,
               indexed: bool = True) -> tuple[list[Fold], list[str]]:
    """Assign each case of ``pairs`` to the model that held its subject out.

    ``held_out`` gives, per model in fold order, (weights source, recorded held-out
    subjects). ``indexed`` False: a single ``--held-out`` model (no fold number, and
    the folds are not expected to cover DATA_DIR). Returns the folds and warnings:
    held-out subjects absent from DATA_DIR, and (``indexed``) subjects of DATA_DIR no
    fold holds out, which are not scored. Raises :class:`InputError` when two folds
    hold out the same subject (their models are not one cross-validation) or when no
    case of DATA_DIR is held out at all (another data set).
    """
    data_dir = Path(data_dir)
    subject_of = case_subjects(data_dir, pairs)
    present = set(subject_of.values())
    owner: dict[str, int] = {}
    for i, (source, subjects) in enumerate(held_out):
        for s in subjects:
            if s in owner:
                j = owner[s]
                shared = sorted(set(subjects) & set(held_out[j][1]))
                raise InputError(
                    f"{held_out[j][0]} and {source} both hold out {len(shared)} subject(s) "
                    f"({', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''}): folds of "
                    "one cross-validation hold out disjoint subjects; are they from the same "
                    "`bvmesh train --fold all` run?")
            owner[s] = i
    folds, warnings = [], []
    for i, (source, subjects) in enumerate(held_out):
        mine = set(subjects)
        absent = sorted(mine - present)
        if absent:
            warnings.append(f"{source}: {len(absent)} of its {len(mine)} held-out subjects are "
                            f"not in {data_dir} ({', '.join(absent[:5])}"
                            f"{', ...' if len(absent) > 5 else ''})")
        folds.append(Fold(i if indexed else None, str(source), tuple(sorted(mine)),
                          tuple(p for p in pairs if subject_of[p.case] in mine)))
    if not any(f.pairs for f in folds):
        what = "the folds'" if indexed else f"{held_out[0][0]}'s" if held_out else "the"
        raise InputError(f"{data_dir}: holds none of {what} held-out subjects; is it the data "
                         "the model(s) were trained on?")
    if indexed:
        left = sorted(present - set(owner))
        if left:
            warnings.append(f"{len(left)} of the {len(present)} subjects in {data_dir} are held "
                            f"out by no fold and not scored ({', '.join(left[:5])}"
                            f"{', ...' if len(left) > 5 else ''})")
    return folds, warnings


def segment_and_score_folds(folds: Sequence[Fold], models: Sequence, **kwargs
                            ) -> Iterator[CaseResult]:
    """:func:`segment_and_score` each fold's cases with its own model (``models[i]``
    for ``folds[i]``, each loaded once by the caller); results carry their fold number.

    ``kwargs`` go to :func:`segment_and_score` (``propagation``, ``save_dir``, ...).
    """
    if len(folds) != len(models):
        raise ValueError(f"{len(folds)} folds but {len(models)} models")
    for fold, model in zip(folds, models):
        for result in segment_and_score(fold.pairs, model=model, **kwargs):
            result.fold = fold.index
            yield result
