"""A label map file -> a tagged biventricular mesh file and its quality report: what
`bvmesh mesh` does, as a library function (:func:`mesh_file`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import io
from ..errors import InputError
from ..labels import parse_label_map, to_bvmesh
from . import prepare, remesh
from .export import FORMAT_SUFFIX
from .tags import MARKERS


def output_path(labels: Path, output: Path | None, fmt: str | None, tetra: bool) -> Path:
    """The mesh file to write: ``output`` (its suffix changed to ``fmt``'s), or beside
    ``labels`` named after it (.vtp, or .msh for a tetrahedral mesh)."""
    if fmt is not None and fmt not in FORMAT_SUFFIX:
        raise InputError(f"format {fmt!r}: choose one of {', '.join(FORMAT_SUFFIX)}")
    if output is None:
        suffix = FORMAT_SUFFIX[fmt] if fmt else (".msh" if tetra else ".vtp")
        return labels.with_name(io.case_name(labels) + suffix)
    if fmt is not None and output.suffix.lower() != FORMAT_SUFFIX[fmt]:
        return output.with_suffix(FORMAT_SUFFIX[fmt])
    return output


def quality_path(mesh_path: Path) -> Path:
    """``heart.v2.vtp`` -> ``heart.v2.quality.json`` (only the format's suffix goes)."""
    return mesh_path.with_name(mesh_path.stem + ".quality.json")


def mesh_file(labels: str | Path, output: str | Path | None = None, *, label_map: str = "bvmesh",
              tetra: bool = False, fmt: str | None = None, edge_mm: float = 1.5,
              rv_wall_mm: float = 3.0, base_slice: int | None = None,
              smooth: bool = True) -> dict:
    """Read a label map, mesh its myocardium, write the mesh and ``<mesh>.quality.json``;
    return that report (files, quality gate, notes, base plane, tag markers)."""
    from . import surface_mesh, tetra_mesh, write_mesh

    labels = Path(labels)
    path = output_path(labels, None if output is None else Path(output), fmt, tetra)
    volume = io.load(labels)
    if not np.allclose(volume.data, np.round(volume.data)):
        raise InputError(f"{labels}: holds non-integer values; is this a label map, not an image?")
    lab = to_bvmesh(np.round(volume.data).astype(np.int64), parse_label_map(label_map),
                    source=str(labels))
    plane, notes = None, list(volume.notes)
    if base_slice is not None:
        thick = volume.spacing.max() > prepare.THICK_RATIO * volume.spacing.min()
        point, normal, why = prepare.base_plane_from_slice(
            lab, volume.affine, base_slice, int(np.argmax(volume.spacing)) if thick else None)
        plane = (point, normal)
        notes.append(why)
    surf = surface_mesh(lab, volume.affine, base_plane=plane, smooth=smooth,
                        rv_wall_mm=rv_wall_mm, edge_mm=edge_mm if remesh.available() else None)
    notes += list(surf.notes)
    if not remesh.available():
        notes.append(remesh.missing_note(edge_mm))
    mesh, quality = surf, surf.quality
    if tetra:
        mesh = tetra_mesh(surf, edge_mm=edge_mm)
        notes += [n for n in mesh.notes if n not in notes]
        quality = {**mesh.quality, "surface": surf.quality,
                   "passed": mesh.quality["passed"] and surf.quality["passed"],
                   "failed": mesh.quality["failed"] + [f"surface.{f}" for f in surf.quality["failed"]]}
    files = write_mesh(mesh, path)
    report_path = quality_path(path)
    report = {"input": str(labels), "labels": label_map, "files": [str(f) for f in files],
              "report": str(report_path), "tetra": tetra, "edge_mm": edge_mm,
              "quality": quality, "notes": notes,
              "base_plane_mm": {"point": [round(float(x), 4) for x in surf.base_plane[0]],
                                "normal": [round(float(x), 6) for x in surf.base_plane[1]]},
              "markers": dict(MARKERS)}
    text = json.dumps(report, indent=2)
    io.atomic_write(report_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return report
