"""Scoring predicted label maps against ground truth: pairing, per-case scores, summaries.

Scoring works on arrays: :func:`score_case` takes a predicted and a ground-truth label
map (bvmesh labels, same grid) and the grid's affine, and does not care where the
prediction came from. :func:`score_predictions` scores a stream of such pairs (from
files, or straight from :func:`bvmesh.segment`); :func:`evaluate` pairs files or folders
and scores them; :func:`write_results` writes ``cases.csv``, ``slices.csv``,
``summary.json``, ``results.md`` and the plots. :func:`plan_folds` and
:func:`segment_and_score_folds` score only the subjects a model never saw in training
(``--held-out``), or each cross-validation fold's model on its own held-out subjects,
pooled (``--folds K``).

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
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, metrics
from . import io as bio
from .errors import BvmeshError, InputError, OutputError, WeightsError
from .labels import CLASS_NAMES, LV_MYO, parse_label_map, to_bvmesh

log = logging.getLogger(__name__)

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
    pred: str | None = None
    gt: str | None = None
    #: Cross-validation fold whose model segmented this case (``--folds``), else None.
    fold: int | None = None

    @property
    def scored(self) -> bool:
        return self.status in (OK, EMPTY)


def _failed(case: str, message: str, status: str = FAILED, **paths) -> CaseResult:
    return CaseResult(case, status, [message], **paths)


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
        labels = STRUCTURES[name]
        mp, mg = np.isin(p_in, labels), np.isin(g_in, labels)
        if not mg.any():
            result.messages.append(f"{name}: absent from the ground truth; n/a")
            continue
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
    if "lv_myo" in result.scores:
        result.lv_mass_gt_g = metrics.lv_mass_g(g_in == LV_MYO, affine)
        result.lv_mass_pred_g = metrics.lv_mass_g(p_in == LV_MYO, affine)
    if isotropic_mm and result.scores:
        _isotropic_dice(result, pred, gt, affine, axis, rng, isotropic_mm)
    result.seconds = time.perf_counter() - t0
    return result


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
            yield _failed(case, str(exc))


# --------------------------------------------------------------------------- files

@dataclass(frozen=True)
class CasePair:
    """A case's files. ``pred`` None: no prediction; ``gt`` None: a prediction without
    ground truth; ``problem``: why the pair cannot be used (e.g. duplicate names)."""

    case: str
    pred: Path | None
    gt: Path | None
    problem: str | None = None


LABELS_STEM = "labels"  # `bvmesh segment -o out/` writes out/<case>/labels.nii.gz


def _gt_case(path: Path) -> str:
    name = bio.case_name(path)
    return name[:-3] if name.lower().endswith("_gt") else name


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
             and p.name.lower().endswith(bio.NIFTI_SUFFIXES + bio.ITK_SUFFIXES)]
    return sorted(files)


def _is_labels_file(path: Path) -> bool:
    return bio.case_name(path) == LABELS_STEM


def _gt_files(folder: Path) -> dict[str, list[Path]]:
    files = _image_files(folder)
    # ACDC keeps images and `_gt` label maps side by side: when `_gt` files exist, only
    # they are ground truth.
    if any(bio.case_name(p).lower().endswith("_gt") for p in files):
        files = [p for p in files if bio.case_name(p).lower().endswith("_gt")]
    found: dict[str, list[Path]] = {}
    for p in files:
        found.setdefault(_gt_case(p), []).append(p)
    return found


def _pred_files(folder: Path) -> dict[str, list[Path]]:
    """``<case>.nii.gz`` files and ``<case>/labels.nii.gz`` folders (bvmesh segment -o).

    A folder holding a ``labels`` file contributes only that file (its other images are
    probabilities, stacks, ...)."""
    files = _image_files(folder)
    label_dirs = {p.parent for p in files if _is_labels_file(p)}
    found: dict[str, list[Path]] = {}
    for p in files:
        if _is_labels_file(p):
            name = p.parent.name if p.parent != folder else bio.case_name(p)
        elif p.parent in label_dirs:
            continue
        else:
            name = bio.case_name(p)
        found.setdefault(name, []).append(p)
    return found


def find_pairs(pred: str | Path, gt: str | Path) -> list[CasePair]:
    """Pair prediction and ground truth files by case name.

    Two files make one pair. Two folders pair ``<case>[_gt].<ext>`` ground truths
    (searched recursively; in a folder with ``_gt`` files only those count) with
    ``<case>.<ext>`` or ``<case>/labels.<ext>`` predictions. A prediction folder that
    holds ``labels.<ext>`` itself pairs with a single ground-truth file.
    """
    pred, gt = Path(pred), Path(gt)
    for role, p in (("prediction", pred), ("ground truth", gt)):
        if not p.exists():
            raise InputError(f"{p}: no such {role} file or folder; check the path")
    if gt.is_file():
        if pred.is_dir():
            inner = sorted(f for f in pred.iterdir() if _is_labels_file(f))
            if not inner:
                raise InputError(f"{pred}: is a folder but the ground truth {gt} is a file; "
                                 f"pass a prediction file, or a folder holding {LABELS_STEM}.nii.gz")
            pred = inner[0]
        return [CasePair(_gt_case(gt), pred, gt)]
    if pred.is_file():
        raise InputError(f"{pred}: is a file but the ground truth {gt} is a folder; pass two "
                         "files or two folders")
    gts, preds = _gt_files(gt), _pred_files(pred)
    if not gts:
        raise InputError(f"{gt}: holds no image files (.nii, .nii.gz, .mha, .nrrd)")
    pairs: list[CasePair] = []
    for case in sorted(set(gts) | set(preds)):
        g, p = gts.get(case, []), preds.get(case, [])
        problem = None
        for role, found in (("ground truth", g), ("prediction", p)):
            if len(found) > 1:
                problem = (f"{len(found)} {role} files share the case name {case!r}: "
                           + ", ".join(map(str, found)) + "; keep one")
        pairs.append(CasePair(case, p[0] if p else None, g[0] if g else None, problem))
    return pairs


def load_labels(path: Path, mapping: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """A label map file as bvmesh labels (uint8) and its affine (voxel -> RAS mm)."""
    try:
        vol = bio.load(path)
        data, affine = vol.data, vol.affine
    except InputError as exc:
        # io.load refuses all-zero images (right for scans); an empty prediction is a
        # legitimate, if bad, label map, so read it again without that check.
        data, affine = _read_empty_nifti(path, exc)
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        odd = data[rounded != data][:3]
        raise InputError(f"{path}: holds non-integer values (e.g. {odd.tolist()}); a label map "
                         "is needed: did you pass the image instead of its labels?")
    return to_bvmesh(rounded.astype(np.int64), mapping, source=str(path)), affine


def _read_empty_nifti(path: Path, original: InputError) -> tuple[np.ndarray, np.ndarray]:
    if not path.name.lower().endswith(bio.NIFTI_SUFFIXES):
        raise original
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception:
        raise original from None
    if data.ndim != 3 or data.any():
        raise original
    affine, _ = bio.nifti_affine(img.header)
    return data, affine


def check_same_grid(pred_path: Path, pred: np.ndarray, pred_affine: np.ndarray,
                    gt_path: Path, gt: np.ndarray, gt_affine: np.ndarray) -> None:
    """Raise InputError unless both label maps share shape and affine (to 1e-3 voxel)."""
    if pred.shape != gt.shape:
        raise InputError(f"{pred_path}: grid {pred.shape} differs from the ground truth's "
                         f"{gt.shape} ({gt_path}); put the prediction on the ground truth's "
                         "grid (bvmesh segment writes on the input's grid)")
    tol = 1e-3 * float(metrics.voxel_spacing(gt_affine).min())
    diff = float(np.abs(np.asarray(pred_affine) - np.asarray(gt_affine))[:3].max())
    if diff > tol:
        raise InputError(f"{pred_path}: affine differs from the ground truth's ({gt_path}) by up "
                         f"to {diff:.3g} mm; the two are not on the same grid (or one header "
                         "was rewritten): resample the prediction onto the ground truth")


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
            yield _failed(pair.case, pair.problem, **paths)
            continue
        if pair.pred is None:
            yield _failed(pair.case, f"no prediction for ground truth {pair.gt}", MISSING,
                          **paths)
            continue
        try:
            g, g_aff = load_labels(pair.gt, gt_map)
            p, p_aff = load_labels(pair.pred, pred_map)
            check_same_grid(pair.pred, p, p_aff, pair.gt, g, g_aff)
            result = score_case(p, g, g_aff, case=pair.case, structures=structures,
                                isotropic_mm=isotropic_mm)
        except BvmeshError as exc:
            yield _failed(pair.case, str(exc), **paths)
            continue
        result.pred, result.gt = paths["pred"], paths["gt"]
        yield result


def scored_structures(gt_map: dict[int, str], pred_map: dict[int, str]) -> tuple[str, ...]:
    """Structures both label maps provide, in STRUCTURES order."""
    both = set(structures_provided(gt_map)) & set(structures_provided(pred_map))
    return tuple(s for s in STRUCTURES if s in both)


def evaluate(pred: str | Path, gt: str | Path, *, labels: str = "bvmesh",
             pred_labels: str = "bvmesh", isotropic_mm: float | None = ISOTROPIC_MM,
             on_case: Callable[[CaseResult], None] | None = None) -> Evaluation:
    """Pair, load and score prediction and ground-truth files or folders.

    ``labels`` / ``pred_labels`` name the label maps (acdc, mnms, binary, bvmesh, or
    "1=rv_pool,2=lv_myo,3=lv_pool"). ``on_case`` is called after each case (progress).
    Bad cases are recorded as failed; only unusable arguments raise.
    """
    gt_map, pred_map = parse_label_map(labels), parse_label_map(pred_labels)
    structures = scored_structures(gt_map, pred_map)
    if not structures:
        raise InputError(f"label maps {labels!r} (ground truth) and {pred_labels!r} "
                         "(prediction) share no structure to score")
    pairs = find_pairs(pred, gt)
    cases = []
    for result in iter_file_cases(pairs, labels=labels, pred_labels=pred_labels,
                                  structures=structures, isotropic_mm=isotropic_mm):
        cases.append(result)
        if on_case is not None:
            on_case(result)
    return Evaluation(cases, structures, labels, pred_labels,
                      [p for p in pairs if p.gt is None], isotropic_mm)


# --------------------------------------------------------------------------- segment, then score

def find_image_cases(data_dir: str | Path) -> list[CasePair]:
    """Ground truths in ``data_dir`` (as :func:`find_pairs` finds them) with their images.

    The image of ``<case>_gt.nii.gz`` is ``<case>.nii.gz`` beside it (ACDC's layout);
    it goes in ``CasePair.pred`` (None, with a problem, when it is missing).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: not a folder; --cases takes a folder of images and "
                         "<case>_gt label maps")
    pairs = []
    for case, found in sorted(_gt_files(data_dir).items()):
        gt = found[0]
        suffix = gt.name[len(bio.case_name(gt)):]
        image = gt.with_name(case + suffix)
        problem = None
        if len(found) > 1:
            problem = (f"{len(found)} ground truth files share the case name {case!r}: "
                       + ", ".join(map(str, found)) + "; keep one")
        elif image == gt or not image.exists():
            problem = f"no image {image.name} beside the ground truth {gt}"
        pairs.append(CasePair(case, None if problem else image, gt, problem))
    if not pairs:
        raise InputError(f"{data_dir}: holds no <case>_gt label maps")
    return pairs


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
        from .pipeline import load_weights, segment

        segment_fn = segment
        if model is None:
            model, _ = load_weights(weights, device)
    for pair in pairs:
        paths = {"pred": None, "gt": str(pair.gt)}
        if pair.problem or pair.pred is None or pair.gt is None:
            yield _failed(pair.case, pair.problem or "no image", **paths)
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
            yield _failed(pair.case, str(exc), **paths)
            continue
        result.pred, result.gt = paths["pred"], paths["gt"]
        result.segment_seconds = seconds
        yield result


# --------------------------------------------------------------------------- held-out subjects

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

    Subjects are the ones training recorded: :func:`bvmesh.dataset.find_cases` decides
    them (the per-subject folder in ACDC, so ED and ES share one). A ground truth it
    does not list (its image is missing) gets the same rule, so that it still shows up
    among its subject's cases, as failed.
    """
    from .dataset import find_cases

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


# --------------------------------------------------------------------------- summary

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


def metric_value(case: CaseResult, structure: str, metric: str) -> float:
    """One number of a case (nan when not scored); ``abs_vol_err_ml`` is derived."""
    s = case.scores.get(structure)
    if s is None:
        return math.nan
    if metric == "abs_vol_err_ml":
        return abs(s["vol_err_ml"])
    return s[metric]


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


# --------------------------------------------------------------------------- writing

NA = "n/a"


def fmt(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` decimals, or n/a when undefined."""
    if value is None or not math.isfinite(value):
        return NA
    return f"{value:.{digits}f}"


def case_rows(ev: Evaluation) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of cases.csv (undefined or unscored values are "n/a")."""
    folds = any(c.fold is not None for c in ev.cases)
    columns = ["case"] + (["fold"] if folds else []) + [
        "status", "message", "slice_axis", "base_slice", "apex_slice", "n_slices", "slice_mm"]
    columns += [f"{s}_{m}" for s in ev.structures for m in METRICS]
    if "lv_myo" in ev.structures:
        columns += ["lv_mass_gt_g", "lv_mass_pred_g", "lv_mass_err_g"]
    columns += ["seconds", "segment_seconds", "pred", "gt"]
    rows = []
    for c in ev.cases:
        row = {k: NA for k in columns}
        row.update(case=c.case, status=c.status, message="; ".join(c.messages),
                   pred=c.pred or "", gt=c.gt or "", seconds=f"{c.seconds:.3f}",
                   segment_seconds=fmt(c.segment_seconds, 2))
        if folds:
            row["fold"] = "" if c.fold is None else str(c.fold)
        if c.slice_range is not None:
            r = c.slice_range
            row.update(slice_axis=str(r.axis), base_slice=str(r.base), apex_slice=str(r.apex),
                       n_slices=str(r.hi - r.lo + 1), slice_mm=fmt(c.slice_mm, 3))
        for s, values in c.scores.items():
            for m in METRICS:
                row[f"{s}_{m}"] = fmt(values[m])
        if "lv_myo" in ev.structures:
            row.update(lv_mass_gt_g=fmt(c.lv_mass_gt_g, 2),
                       lv_mass_pred_g=fmt(c.lv_mass_pred_g, 2),
                       lv_mass_err_g=fmt(c.lv_mass_pred_g - c.lv_mass_gt_g, 2))
        rows.append(row)
    return columns, rows


def slice_rows(ev: Evaluation) -> list[dict[str, str]]:
    """Slice-wise Dice, one row per case, structure and slice (base first)."""
    rows = []
    for c in ev.cases:
        if c.slice_range is None:
            continue
        order = c.slice_range.order
        n = len(order)
        for s, curve in c.slice_dice.items():
            for pos, (k, d) in enumerate(zip(order, curve)):
                rows.append({"case": c.case, "structure": s, "slice": str(int(k)),
                             "from_base": str(pos),
                             "from_base_mm": fmt(pos * c.slice_mm, 2),
                             "relative_position": fmt(pos / (n - 1) if n > 1 else 0.0, 4),
                             "dice": fmt(d)})
    return rows


def _csv_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


#: Metrics in the Markdown / terminal tables: (key, header, digits).
TABLE_METRICS: tuple[tuple[str, str, int], ...] = (
    ("dice", "Dice", 3), ("hd95_mm", "HD95 (mm)", 2), ("assd_mm", "ASSD (mm)", 2),
    ("vol_err_ml", "Vol. error (ml)", 1), ("consistency", "Slice jump", 3),
    ("dice_iso", "Dice iso", 3),
)


def cell(stats: dict, digits: int) -> str:
    """``mean ± std`` of a stats dict, the value alone for one case, or n/a."""
    if not stats.get("n"):
        return NA
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown(summary: dict) -> str:
    """results.md: a table per structure (mean ± std over scored cases) and counts."""
    c = summary["counts"]
    lines = [
        "# Evaluation results", "",
        f"Ground truth labels `{summary['labels']}`, prediction labels "
        f"`{summary['pred_labels']}`; {c['scored']} of {c['cases']} cases scored "
        f"({c[FAILED]} failed, {c[MISSING]} without prediction, {c[EMPTY]} empty "
        f"predictions, {c['unpaired_predictions']} predictions without ground truth).", "",
        "Mean ± std over cases, on the ground truth's labelled slices. HD95 and ASSD on "
        "surface voxels in mm with the file's spacing; volume error = prediction - ground "
        "truth; slice jump = mean |Dice change| between neighbouring slices; Dice iso on a "
        f"{summary['isotropic_mm']} mm isotropic grid between base and apex slices.", "",
        "| Structure | n | " + " | ".join(h for _, h, _ in TABLE_METRICS) + " |",
        "|---|---:|" + "---:|" * len(TABLE_METRICS),
    ]
    for s, stats in summary["structures"].items():
        lines.append(f"| {TITLES[s]} | {stats['dice']['n']} | "
                     + " | ".join(cell(stats[m], d) for m, _, d in TABLE_METRICS) + " |")
    lines += ["", "Medians [IQR]:", "",
              "| Structure | " + " | ".join(h for _, h, _ in TABLE_METRICS) + " |",
              "|---|" + "---:|" * len(TABLE_METRICS)]
    for s, stats in summary["structures"].items():
        cells = []
        for m, _, d in TABLE_METRICS:
            st = stats[m]
            cells.append(f"{st['median']:.{d}f} [{st['q1']:.{d}f}, {st['q3']:.{d}f}]"
                         if st.get("n") else NA)
        lines.append(f"| {TITLES[s]} | " + " | ".join(cells) + " |")
    folds = [f for f in summary.get("folds", []) if f["fold"] is not None]
    if folds:
        names = list(summary["structures"])
        lines += ["", "Mean Dice per fold (each fold's model on the subjects it never saw):", "",
                  "| Fold | subjects | scored | " + " | ".join(SHORT[s] for s in names) + " |",
                  "|---:|---:|---:|" + "---:|" * len(names)]
        for f in folds:
            dice = [f["structures"][s]["dice"] for s in names]
            lines.append(f"| {f['fold']} | {len(f['held_out_subjects'])} | {f['scored']} | "
                         + " | ".join(fmt(d, 3) for d in dice) + " |")
    elif summary.get("folds"):
        f = summary["folds"][0]
        lines += ["", f"Held-out cases only: the {len(f['held_out_subjects'])} subjects "
                      f"`{f['weights']}` never saw in training."]
    mass = summary.get("lv_mass_g")
    if mass and mass["agreement"].get("n"):
        a = mass["agreement"]
        lines += ["", f"LV mass (1.05 g/ml): ground truth {cell(mass['gt'], 1)} g, prediction "
                      f"{cell(mass['pred'], 1)} g, bias {a['bias']:.1f} g"
                      + (f" (95% limits {a['loa_low']:.1f} to {a['loa_high']:.1f} g)."
                         if a.get("sd") is not None else ".")]
    if summary["problems"]:
        lines += ["", "Cases not scored cleanly:", ""]
        lines += [f"- `{p['case']}` ({p['status']}): {p['message']}" for p in summary["problems"]]
    return "\n".join(lines) + "\n"


def write_results(ev: Evaluation, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write cases.csv, slices.csv, summary.json, results.md (and PNG plots) atomically."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from exc
    summary = ev.summary()
    columns, rows = case_rows(ev)
    texts = {
        "cases.csv": _csv_text(columns, rows),
        "slices.csv": _csv_text(["case", "structure", "slice", "from_base", "from_base_mm",
                                 "relative_position", "dice"], slice_rows(ev)),
        "summary.json": json.dumps(summary, indent=2) + "\n",
        "results.md": markdown(summary),
    }
    written = []
    for name, text in texts.items():
        written.append(bio.atomic_write(out_dir / name,
                                        lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")))
    if plots and any(c.scored for c in ev.cases):
        from . import plots as bplots

        written += bplots.plot_all(ev, out_dir)
    return written
