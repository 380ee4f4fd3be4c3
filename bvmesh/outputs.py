"""The per-case output folder, written all at once: a case folder is either complete or absent.

Everything is first written into a hidden sibling folder, which is renamed into place
at the end, so an interrupted run never leaves a half-written case where a finished
one is expected (and `--skip-existing` can trust what it finds).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from . import io, qc
from .errors import OutputError
from .pipeline import SegmentResult

log = logging.getLogger(__name__)

REPORT = "report.json"


def prepare_dir(out_dir: str | os.PathLike) -> Path:
    """Create the output folder, or say clearly why it cannot be."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is a file; pass a folder to -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror}); "
                          "choose a writable place with -o") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: no write permission; choose a writable place with -o")
    return out


def base_plane(result: SegmentResult) -> tuple[np.ndarray, np.ndarray]:
    """The base cut in world mm: half a stack voxel above the base slice, normal towards the base."""
    from .mesh.prepare import plane_normal_of_axis

    a = result.grid.affine
    _, h, w = result.grid.shape
    point = (a @ np.array([-0.5, (h - 1) / 2, (w - 1) / 2, 1.0]))[:3]
    # Normal of the slice planes (right even on a sheared grid), from the apex toward the base:
    # stack index s grows toward the apex.
    return point, -plane_normal_of_axis(a, 0)


def write_case(result: SegmentResult, out_dir: str | os.PathLike, case: str, *,
               probabilities: bool = False, mesh: bool = True) -> Path:
    """Write labels, myocardium, mesh, qc.png and report.json into ``out_dir/case/``."""
    out = prepare_dir(out_dir)
    final = out / case
    tmp = out / f".{case}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        report = dict(result.report)
        files = ["labels.nii.gz", "myocardium.nii.gz"]
        io.save_like(result.labels, result.volume, tmp / "labels.nii.gz")
        io.save_like(result.myocardium, result.volume, tmp / "myocardium.nii.gz")
        if probabilities and result.probabilities is not None:
            io.save_like(np.moveaxis(result.probabilities, 0, -1), result.volume,
                         tmp / "probabilities.nii.gz", dtype=np.float32)
            files.append("probabilities.nii.gz")
        if mesh:
            report["mesh"] = _write_mesh(result, tmp)
            files += ["mesh.vtp", "mesh.stl"]
        _write_qc(result, tmp / "qc.png")
        files.append("qc.png")
        report["outputs"] = files + [REPORT]
        (tmp / REPORT).write_text(json.dumps(report, indent=2, default=_json_default),
                                  encoding="utf-8")
        _swap_into_place(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def mesh_of(result: SegmentResult):
    """The tagged surface of a segmentation: its isotropic stack prediction meshed with
    the base plane at the base slice. Returns (SurfaceMesh, voxels capped at the apex)."""
    from .mesh import surface_mesh
    from .mesh.repair import cap_truncated_end

    # Stack slice s grows toward the apex and the stack ends with the scan: pools that
    # reach its last slice were cut by the field of view, not by anatomy.
    labels, capped = cap_truncated_end(result.stack_labels, axis=0, end=-1)
    return surface_mesh(labels, result.grid.affine, base_plane=base_plane(result)), capped


def _write_mesh(result: SegmentResult, folder: Path) -> dict:
    from .mesh import write_mesh

    surf, capped = mesh_of(result)
    write_mesh(surf, folder / "mesh.vtp")
    write_mesh(surf, folder / "mesh.stl")
    case = folder.name.split(".partial")[0].lstrip(".")
    if not surf.quality.get("passed", False):
        log.warning("%s: mesh failed the quality gate (%s); it is written, see report.json",
                    case, ", ".join(surf.quality.get("failed", [])))
    for note in surf.notes:
        if note.startswith("WARNING: "):
            log.warning("%s: mesh: %s", case, note.removeprefix("WARNING: "))
    notes = list(surf.notes)
    if capped:
        voxel_ml = abs(np.linalg.det(result.grid.affine[:3, :3])) / 1000
        notes.insert(0, f"the scan ends before the apex: the blood pools on its last 2 isotropic "
                        f"slices were closed as myocardium for the mesh ({capped * voxel_ml:.2f} ml; "
                        "labels.nii.gz is unchanged)")
    return {"quality": surf.quality, "notes": notes,
            "vertices": int(len(surf.vertices)), "faces": int(len(surf.faces))}


def _write_qc(result: SegmentResult, path: Path) -> None:
    geo = result.report["slices"]
    axis, base, n = geo["slice_axis"], geo["base_slice"], geo["n_slices"]
    sign = 1 if geo["apex_direction"].startswith("increasing") else -1
    end = n - 1 if sign > 0 else 0
    order = list(range(base, end + sign, sign))
    if 0 <= base - sign < n:
        order.insert(0, base - sign)  # one slice above the base shows where the cut is
    init = int(round(geo["init_slice"]))
    marks = {base: "base", init: "init"}
    name = Path(result.volume.source).name
    qc.montage(result.volume.data, result.labels, path, slice_axis=axis, order=order,
               marks=marks, spacing=result.volume.spacing,
               title=f"{name}: base to apex (contours: bvmesh labels)")


def _swap_into_place(tmp: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
