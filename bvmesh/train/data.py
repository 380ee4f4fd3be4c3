"""Training data: finding image/label pairs, folds, and preparing each case exactly as
inference prepares an image (same ROI, isotropic grid and normalisation code), cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import geometry, io, preprocess
from ..errors import BvmeshError, InputError
from ..labels import LABEL_OF, to_bvmesh

#: In-plane size of the prepared training crop: larger than the 128 network input so that
#: rotations, scaling and shifts never run out of image.
CROP = 160


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path
    subject: str
    group: str = ""


def find_cases(data_dir: str | Path) -> list[Case]:
    """Image/label pairs: ``X_gt.ext`` beside ``X.ext`` (any depth), or ``images/`` + ``labels/``.

    The subject is the case's parent folder when cases live in per-subject folders
    (ACDC), so that ED and ES of one subject never fall on both sides of a fold; the
    group comes from an ACDC ``Info.cfg`` when there is one.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of training data")
    cases: list[Case] = []
    if (root / "images").is_dir() and (root / "labels").is_dir():
        labels = {io.case_name(p): p for p in (root / "labels").iterdir() if io.is_image_path(p)}
        for image in sorted((root / "images").iterdir()):
            name = io.case_name(image)
            if name in labels:
                cases.append(Case(name, image, labels[name], name))
    else:
        for label in sorted(root.rglob("*_gt.*")):
            name = io.case_name(label)[: -len("_gt")]
            matches = [p for p in label.parent.glob(name + ".*") if io.case_name(p) == name]
            if matches:
                subject = label.parent.name if label.parent != root else name
                cases.append(Case(name, matches[0], label, subject, _group(label.parent)))
    if not cases:
        raise InputError(f"{root}: no image/label pairs found (expected X.nii.gz beside "
                         "X_gt.nii.gz, or images/ and labels/ folders)")
    return cases


def _group(folder: Path) -> str:
    info = folder / "Info.cfg"
    if info.is_file():
        text = info.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"^Group:\s*(\S+)", text, re.MULTILINE)
        if match:
            return match.group(1)
    return ""


def stratified_folds(cases: list[Case], k: int, seed: int = 0) -> list[list[str]]:
    """Split subjects into ``k`` folds, dealing each group's subjects round-robin.

    Returns the held-out subject names of each fold. Subjects of one group (ACDC: one
    pathology) spread evenly over folds, so no fold holds a single pathology.
    """
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[str]] = {}
    for case in cases:
        subjects = by_group.setdefault(case.group, [])
        if case.subject not in subjects:
            subjects.append(case.subject)
    folds: list[list[str]] = [[] for _ in range(k)]
    offset = 0
    for group in sorted(by_group):
        subjects = sorted(by_group[group])
        rng.shuffle(subjects)
        for i, subject in enumerate(subjects):
            folds[(i + offset) % k].append(subject)
        offset += len(subjects)
    return [sorted(f) for f in folds]


@dataclass
class Prepared:
    """One case on the training crop grid (float16 image, uint8 one-hot x 255)."""

    name: str
    image: np.ndarray  # (S, CROP, CROP)
    onehot: np.ndarray  # (K+1, S, CROP, CROP)
    apex: int  # last stack slice holding labels
    loc_image: np.ndarray  # (n, 128, 128) whole slices, coarse
    loc_mask: np.ndarray  # (n, 128, 128) heart on the coarse grid


def prepare(case: Case, mapping: dict[int, str], classes: tuple[str, ...],
            spacing_mm: float = 1.25) -> Prepared:
    """Resample a case like inference does, centred on its labelled heart."""
    vol = io.load(case.image)
    lab = io.load(case.label)
    if lab.shape != vol.shape:
        raise InputError(f"{case.label}: grid {lab.shape} differs from its image {vol.shape}")
    labels = to_bvmesh(np.rint(lab.data).astype(np.int32), mapping, source=str(case.label))
    axis, _ = geometry.find_slice_axis(vol.spacing, vol.shape)
    heart = labels > 0
    other = tuple(a for a in range(3) if a != axis)
    areas = heart.sum(axis=other) * np.prod(vol.spacing[list(other)])
    base, sign, _ = geometry.base_from_areas(areas)
    centre = [float(np.mean(np.nonzero(heart)[a])) for a in other]
    grid = geometry.stack_grid(vol.affine, vol.shape, slice_axis=axis, base_slice=base,
                               apex_sign=sign, center=tuple(centre), size=CROP,
                               spacing_mm=spacing_mm)
    raw = preprocess.resample(vol.data, grid)
    m = (CROP - 128) // 2
    image = preprocess.normalise(raw, reference=raw[:, m:m + 128, m:m + 128])
    onehot = np.stack([preprocess.resample((labels == 0).astype(np.float32), grid, cval=1.0)]
                      + [preprocess.resample((labels == LABEL_OF[c]).astype(np.float32), grid)
                         for c in classes])
    fg = onehot[1:].max(axis=(0, 2, 3)) > 0.5
    apex = int(np.flatnonzero(fg)[-1]) if fg.any() else 0
    lgrid = preprocess.locator_grid(vol.affine, vol.shape, axis)
    loc_image = preprocess.locator_input(vol.data, lgrid)
    loc_mask = preprocess.resample(heart.astype(np.float32), lgrid, mode="constant") > 0.5
    return Prepared(case.name, image.astype(np.float16), (onehot * 255).round().astype(np.uint8),
                    apex, loc_image.astype(np.float16), loc_mask.astype(np.uint8))


def held_out(cases: list[Case], fold: int | None, folds: int,
             seed: int) -> tuple[list[Case], list[Case]]:
    """(training cases, held-out cases) of ``fold`` of ``folds``; all cases when fold is None."""
    if fold is None:
        return cases, []
    if not 0 <= fold < folds:
        raise BvmeshError(f"fold {fold} is not in 0..{folds - 1}")
    test = set(stratified_folds(cases, folds, seed)[fold])
    return [c for c in cases if c.subject not in test], [c for c in cases if c.subject in test]


def load_training_data(cases: list[Case], mapping: dict[int, str], classes: tuple[str, ...],
                       cache: Path | None = None,
                       on_case: Callable[[int, int], None] | None = None) -> list[Prepared]:
    """Prepare every case (reusing ``cache`` npz files when present)."""
    out = []
    for i, case in enumerate(cases):
        path = cache / f"{case.name}.npz" if cache else None
        if path and path.exists():
            z = np.load(path)
            out.append(Prepared(case.name, z["image"], z["onehot"], int(z["apex"]),
                                z["loc_image"], z["loc_mask"]))
        else:
            p = prepare(case, mapping, classes)
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, image=p.image, onehot=p.onehot, apex=p.apex, loc_image=p.loc_image,
                         loc_mask=p.loc_mask)
            out.append(p)
        if on_case:
            on_case(i + 1, len(cases))
    return out


def fingerprint(cases: list[Case]) -> str:
    """A short hash of the training file names and sizes: which data made these weights."""
    import hashlib

    h = hashlib.sha256()
    for c in cases:
        for p in (c.image, c.label):
            h.update(f"{p.name}:{p.stat().st_size};".encode())
    return h.hexdigest()[:16]
