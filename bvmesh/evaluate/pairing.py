"""Which files make a case: pairing predictions with ground truths, and reading label maps.

:func:`find_pairs` pairs prediction and ground-truth files or folders by case name;
:func:`find_image_cases` finds the images beside ACDC-style ``<case>_gt`` label maps
(``--cases``). :func:`load_labels` reads a label map as bvmesh labels and
:func:`check_same_grid` refuses two maps that are not on one grid. Problems that concern
one case are recorded on its :class:`CasePair`; only unusable arguments raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import io as bio
from .. import metrics
from ..errors import InputError
from ..labels import to_bvmesh


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
