"""The per-case output folder, written all at once: a case folder is either complete or absent.

Everything is first written into a hidden sibling folder, which is renamed into place
at the end, so an interrupted run never leaves a half-written case where a finished
one is expected (and `--skip-existing` can trust what it finds).
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import io, qc
from .checks import with_mesh
from .errors import OutputError
from .labels import MYOCARDIUM
from .mesh.remesh import DEFAULT_EDGE_MM, missing_note
from .mesh.remesh import available as remesh_available
from .pipeline import SegmentResult, apex_sign

if TYPE_CHECKING:
    from .cine import CineResult

log = logging.getLogger(__name__)

REPORT = "report.json"
#: Why a case folder has no mesh: the label map holds no myocardium (QC then fails).
NO_MYOCARDIUM = "no myocardium in the labels: no mesh written"


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
    marching cubes' density), how an apex the labels leave open is closed
    (``extrapolate``: a rounded cap; ``flat``: a lid at the last slice), and which frames
    of a cine (``ed-es``, or ``all``: every frame too)."""

    edge_mm: float | None = DEFAULT_EDGE_MM
    apex: str = "extrapolate"
    frames: str = "ed-es"


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


@contextlib.contextmanager
def _case_folder(out_dir: str | os.PathLike, case: str):
    """A hidden folder to write ``case`` into, swapped into ``out_dir/case`` on success and
    removed on any failure."""
    out = prepare_dir(out_dir)
    tmp = out / f".{case}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _swap_into_place(tmp, out / case)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_report(report: dict, folder: Path, files: list[str]) -> None:
    report["outputs"] = files + [REPORT]
    (folder / REPORT).write_text(json.dumps(report, indent=2, default=_json_default),
                                 encoding="utf-8")


def write_case(result: SegmentResult, out_dir: str | os.PathLike, case: str, *,
               probabilities: bool = False, mesh: MeshOptions | None = MeshOptions()) -> Path:
    """Write labels, myocardium, mesh (None: no mesh), qc.png and report.json into
    ``out_dir/case/``."""
    with _case_folder(out_dir, case) as tmp:
        report = dict(result.report)
        files = ["labels.nii.gz", "myocardium.nii.gz"]
        io.save_like(result.labels, result.volume, tmp / "labels.nii.gz")
        io.save_like(result.myocardium, result.volume, tmp / "myocardium.nii.gz")
        if probabilities and result.probabilities is not None:
            io.save_like(np.moveaxis(result.probabilities, 0, -1), result.volume,
                         tmp / "probabilities.nii.gz", dtype=np.float32)
            files.append("probabilities.nii.gz")
        if mesh is not None:
            report["mesh"] = _write_mesh(result, tmp, mesh, case)
            files += [f for f in ("mesh.vtp", "mesh.stl", "mesh.png") if (tmp / f).exists()]
            if "qc" in report:
                report["qc"] = with_mesh(report["qc"], bool(report["mesh"]["quality"]["passed"]))
        _write_qc(result, tmp / "qc.png")
        files.append("qc.png")
        _write_report(report, tmp, files)
    return Path(out_dir) / case


def write_cine_case(result: CineResult, out_dir: str | os.PathLike, case: str, *,
                    mesh: MeshOptions | None = MeshOptions()) -> Path:
    """A cine's case folder: 4D labels and myocardium on the cine's 4D grid, volumes.csv,
    volumes.png, qc.png (ED) and qc_ES.png, meshes at ED and ES (``mesh.frames="all"``:
    also every frame as mesh_fNN.vtp), and report.json."""
    from .qc import volume_curves

    with _case_folder(out_dir, case) as tmp:
        report = dict(result.report)
        reference = result.cine.reference()
        files = ["labels.nii.gz", "myocardium.nii.gz", "volumes.csv", "volumes.png"]
        labels = result.labels  # stacked from the frames: once
        io.save_like(labels, reference, tmp / "labels.nii.gz")
        io.save_like(np.isin(labels, MYOCARDIUM), reference, tmp / "myocardium.nii.gz")
        _write_volumes_csv(report["frames"], tmp / "volumes.csv")
        volume_curves(result.volumes, tmp / "volumes.png", ed=result.ed, es=result.es,
                      times_ms=result.cine.times_ms, title=f"{case}: volume over the cycle")
        phases = {"ED": result.ed, "ES": result.es}
        if mesh is not None:
            report["mesh"] = _write_cine_meshes(result, tmp, mesh, case, phases, files)
            report["qc"] = with_mesh(report["qc"], bool(report["mesh"]["quality"]["passed"]))
        for phase, t in phases.items():
            name = "qc.png" if phase == "ED" else f"qc_{phase}.png"
            _write_qc(result.frames[t], tmp / name, note=f"{phase}, frame {t}")
            files.append(name)
        _write_report(report, tmp, files)
    return Path(out_dir) / case


def _write_cine_meshes(result: CineResult, folder: Path, options: MeshOptions, case: str,
                       phases: dict[str, int], files: list[str]) -> dict:
    """mesh_ED and mesh_ES (.vtp, .stl, .png), and with ``all`` mesh_fNN.vtp of every frame."""
    out: dict = {}
    for phase, t in phases.items():
        out[phase] = {"frame": t, **_write_mesh(result.frames[t], folder, options, case,
                                                stem=f"mesh_{phase}")}
        files += [f"mesh_{phase}{ext}" for ext in (".vtp", ".stl", ".png")
                  if (folder / f"mesh_{phase}{ext}").exists()]
    if options.frames == "all":
        from .mesh import write_mesh

        out["frames"] = []
        for t, frame in enumerate(result.frames):
            if not frame.myocardium.any():
                out["frames"].append({"frame": t, "passed": False, "faces": 0,
                                      "skipped": NO_MYOCARDIUM})
                continue
            surf, _ = mesh_of(frame, options)
            write_mesh(surf, folder / f"mesh_f{t:02d}.vtp")
            files.append(f"mesh_f{t:02d}.vtp")
            out["frames"].append({"frame": t, "passed": bool(surf.quality.get("passed")),
                                  "faces": int(len(surf.faces))})
    passed = all(out[p]["quality"]["passed"] for p in phases) and \
        all(f["passed"] for f in out.get("frames", []))
    out["quality"] = {"passed": passed}
    return out


def _write_volumes_csv(frames: list[dict], path: Path) -> None:
    from .cine import CURVES

    fields = ["frame", "time_ms", *CURVES, "myocardium_ml", "lv_mass_g", "qc"]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(frames)

    io.atomic_write(path, write)


def _write_mesh(result: SegmentResult, folder: Path, options: MeshOptions, case: str,
                stem: str = "mesh") -> dict:
    from .mesh import write_mesh
    from .mesh.render import render_png

    if not result.myocardium.any():
        log.warning("%s: %s: %s", case, stem, NO_MYOCARDIUM)
        return {"skipped": NO_MYOCARDIUM, "quality": {"passed": False, "failed": ["no_myocardium"]}}
    surf, vol = mesh_of(result, options)
    write_mesh(surf, folder / f"{stem}.vtp")
    write_mesh(surf, folder / f"{stem}.stl")
    state = "gate passed" if surf.quality.get("passed") else "GATE FAILED"
    label = "" if stem == "mesh" else f" {stem.removeprefix('mesh_')}"
    render_png(surf, folder / f"{stem}.png",
               title=f"{case}{label}: bvmesh segment mesh ({len(surf.faces)} faces, {state})")
    if not surf.quality.get("passed", False):
        log.warning("%s: %s failed the quality gate (%s); it is written, see report.json",
                    case, stem, ", ".join(surf.quality.get("failed", [])))
    notes = [*vol.notes, *surf.notes]
    for note in notes:
        if note.startswith("WARNING: "):
            log.warning("%s: %s: %s", case, stem, note.removeprefix("WARNING: "))
    if options.edge_mm and not remesh_available():
        notes.append(missing_note(options.edge_mm))
        log.warning("%s: %s", case, notes[-1])
    return {"quality": surf.quality, "notes": notes, "apex": vol.apex.as_dict() if vol.apex else None,
            "vertices": int(len(surf.vertices)), "faces": int(len(surf.faces)),
            "myocardium_ml": round(surf.volume_ml, 2)}


def _write_qc(result: SegmentResult, path: Path, note: str = "") -> None:
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
               title=f"{name}{f' ({note})' if note else ''}: base to apex (contours: bvmesh labels)")


#: Every file a case folder can hold from bvmesh (patterns): what a re-run may replace or remove.
CASE_FILES = ("labels.nii.gz", "myocardium.nii.gz", "probabilities.nii.gz", "mesh.vtp", "mesh.stl",
              "mesh.png", "qc.png", "volumes.csv", "volumes.png", "qc_*.png", "mesh_*.vtp",
              "mesh_*.stl", "mesh_*.png", REPORT)


def _is_case_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in CASE_FILES)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Move the finished case into place. Into an existing folder, file by file: bvmesh's own
    files from an earlier run are replaced or removed, anything else the user put there
    stays. The old report goes first and the new one comes last, so a folder with a report
    is always complete (--skip-existing trusts that)."""
    if not final.exists():
        os.replace(tmp, final)
        return
    (final / REPORT).unlink(missing_ok=True)
    for old in final.iterdir():
        if old.is_file() and _is_case_file(old.name) and not (tmp / old.name).exists():
            old.unlink()
    for new in tmp.iterdir():
        if new.name != REPORT:
            os.replace(new, final / new.name)
    os.replace(tmp / REPORT, final / REPORT)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
