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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io, qc
from .errors import OutputError
from .mesh.remesh import DEFAULT_EDGE_MM, missing_note
from .mesh.remesh import available as remesh_available
from .pipeline import SegmentResult, apex_sign

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


@dataclass(frozen=True)
class MeshOptions:
    """How ``bvmesh segment`` meshes a case: the surface's edge length (mm; None keeps
    marching cubes' density) and how an apex the labels leave open is closed
    (``extrapolate``: a rounded cap; ``flat``: a lid at the last slice)."""

    edge_mm: float | None = DEFAULT_EDGE_MM
    apex: str = "extrapolate"


def last_labelled(result: SegmentResult) -> tuple[float, bool]:
    """(distance in mm from the base slice's centre to the centre of the most apical input
    slice holding labels, whether that slice is the scan's last)."""
    geo = result.report["slices"]
    axis, base, n = geo["slice_axis"], geo["base_slice"], geo["n_slices"]
    sign = apex_sign(geo)
    other = tuple(a for a in range(3) if a != axis)
    labelled = np.flatnonzero(result.labels.any(axis=other))
    below = labelled[(labelled - base) * sign >= 0]
    last = int(below[np.argmax((below - base) * sign)]) if len(below) else base
    end = n - 1 if sign > 0 else 0
    return abs(last - base) * float(result.volume.spacing[axis]), last == end


def mesh_of(result: SegmentResult, options: MeshOptions = MeshOptions()):
    """The tagged surface of a segmentation: its isotropic stack prediction with every
    labelled slice's whole slab (bvmesh.mesh.slabs), the apex closed, meshed with the base
    plane at the base slice's basal face. Returns (SurfaceMesh, SlabVolume)."""
    from .mesh import surface_mesh
    from .mesh.slabs import slab_volume

    geo = result.report["slices"]
    last_mm, scan_end = last_labelled(result)
    vol = slab_volume(result.stack_labels, result.grid.affine, spacing_mm=result.grid.spacing_mm,
                      slab_mm=float(result.volume.spacing[geo["slice_axis"]]),
                      last_labelled_mm=last_mm, scan_end=scan_end, apex=options.apex)
    surf = surface_mesh(vol.labels, vol.affine, base_plane=vol.base_plane,
                        edge_mm=options.edge_mm if options.edge_mm and remesh_available() else None)
    return surf, vol


def write_case(result: SegmentResult, out_dir: str | os.PathLike, case: str, *,
               probabilities: bool = False, mesh: MeshOptions | None = MeshOptions()) -> Path:
    """Write labels, myocardium, mesh (None: no mesh), qc.png and report.json into
    ``out_dir/case/``."""
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
        if mesh is not None:
            report["mesh"] = _write_mesh(result, tmp, mesh)
            files += ["mesh.vtp", "mesh.stl", "mesh.png"]
            if "qc" in report:
                from .checks import with_mesh

                report["qc"] = with_mesh(report["qc"], bool(report["mesh"]["quality"]["passed"]))
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


def _write_mesh(result: SegmentResult, folder: Path, options: MeshOptions) -> dict:
    from .mesh import write_mesh
    from .mesh.render import render_png

    surf, vol = mesh_of(result, options)
    write_mesh(surf, folder / "mesh.vtp")
    write_mesh(surf, folder / "mesh.stl")
    case = folder.name.split(".partial")[0].lstrip(".")
    state = "gate passed" if surf.quality.get("passed") else "GATE FAILED"
    render_png(surf, folder / "mesh.png",
               title=f"{case}: bvmesh segment mesh ({len(surf.faces)} faces, {state})")
    if not surf.quality.get("passed", False):
        log.warning("%s: mesh failed the quality gate (%s); it is written, see report.json",
                    case, ", ".join(surf.quality.get("failed", [])))
    notes = [*vol.notes, *surf.notes]
    for note in notes:
        if note.startswith("WARNING: "):
            log.warning("%s: mesh: %s", case, note.removeprefix("WARNING: "))
    if options.edge_mm and not remesh_available():
        notes.append(missing_note(options.edge_mm))
        log.warning("%s: %s", case, notes[-1])
    return {"quality": surf.quality, "notes": notes, "apex": vol.apex.as_dict() if vol.apex else None,
            "vertices": int(len(surf.vertices)), "faces": int(len(surf.faces)),
            "myocardium_ml": round(surf.volume_ml, 2)}


def _write_qc(result: SegmentResult, path: Path) -> None:
    geo = result.report["slices"]
    axis, base, n = geo["slice_axis"], geo["base_slice"], geo["n_slices"]
    sign = apex_sign(geo)
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


#: Every file a case folder can hold from bvmesh: what a re-run may replace or remove.
CASE_FILES = ("labels.nii.gz", "myocardium.nii.gz", "probabilities.nii.gz", "mesh.vtp", "mesh.stl",
              "mesh.png", "qc.png", REPORT)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Move the finished case into place. Into an existing folder, file by file: bvmesh's own
    files from an earlier run are replaced or removed, anything else the user put there
    stays. The old report goes first and the new one comes last, so a folder with a report
    is always complete (--skip-existing trusts that)."""
    if not final.exists():
        os.replace(tmp, final)
        return
    (final / REPORT).unlink(missing_ok=True)
    for name in CASE_FILES:
        if name != REPORT and (tmp / name).exists():
            os.replace(tmp / name, final / name)
        elif name != REPORT:
            (final / name).unlink(missing_ok=True)
    os.replace(tmp / REPORT, final / REPORT)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
