"""Shared by the scripts that score held-out ACDC volumes: the volumes of a cross-validation
model's held-out subjects with their manual labels, their base slice, and Dice on those
labels' slices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

STRUCTURES = ((1, "lv_pool"), (2, "lv_myo"), (3, "rv_pool"))
ACDC_TO_BVMESH = {1: 3, 2: 2, 3: 1}


def held_out_volumes(data: str | Path, subjects: list[str]) -> Iterator[tuple[str, Path, np.ndarray]]:
    """(case name, image path, manual labels in bvmesh values) of each subject's ED and ES."""
    import nibabel as nib

    for subject in subjects:
        folder = Path(data) / subject
        cfg = dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines()
                   if ": " in line)
        for phase in ("ED", "ES"):
            stem = folder / f"{subject}_frame{int(cfg[phase]):02d}"
            raw = np.asarray(nib.load(f"{stem}_gt.nii.gz").dataobj)
            gt = np.zeros_like(raw)
            for a, b in ACDC_TO_BVMESH.items():
                gt[raw == a] = b
            yield f"{subject}_{phase}", Path(f"{stem}.nii.gz"), gt


def dice(labels: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice per structure on the slices (last axis) the manual labels hold."""
    keep = gt.any(axis=(0, 1))
    out = {}
    for value, name in STRUCTURES:
        p, g = labels[..., keep] == value, gt[..., keep] == value
        out[name] = float(2 * (p & g).sum() / max(1, p.sum() + g.sum()))
    return out


def manual_base(gt: np.ndarray) -> tuple[int, int]:
    """(base slice, apex direction) of ACDC labels, slices along the last axis: the end of
    the labelled slices where the heart's sections are wider (a thin basal slice can be
    smaller than the apical one, so not the end slices alone)."""
    from bvmesh.geometry import base_from_areas

    base, sign, _ = base_from_areas((gt > 0).sum((0, 1)).astype(float), 0.0)
    return base, sign
