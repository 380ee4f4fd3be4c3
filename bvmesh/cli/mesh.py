"""`bvmesh mesh`: a label map -> a tagged, simulation-ready biventricular mesh.

Exit codes: 0 written and passed the quality gate; 1 bad input or failure; 2 bad usage;
3 written, but the mesh failed the quality gate (see <output>.quality.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .console import err, exit_on_error, out, setup_logging

FORMATS = ("stl", "obj", "ply", "vtp", "vtu", "xdmf", "msh", "medit", "carp")


def mesh_command(
    labels: Path = typer.Argument(..., help="Label map (NIfTI, MHA, NRRD, DICOM folder)."),
    output: Path = typer.Option(None, "-o", "--output",
                                help="Mesh file; its extension picks the format unless "
                                     "--format is given. Default: <labels>.vtp (.msh with --tetra)."),
    label_map: str = typer.Option("bvmesh", "--labels",
                                  help="Label values: bvmesh, acdc, mnms, binary, or "
                                       "'1=rv_pool,2=lv_myo,3=lv_pool'."),
    tetra: bool = typer.Option(False, "--tetra",
                               help="Tetrahedral volume mesh (needs: pip install 'bvmesh\\[tetra]')."),
    fmt: str = typer.Option(None, "--format",
                            help="stl, obj, ply, vtp (surface); vtu, xdmf, msh, medit, carp "
                                 "(volume, with --tetra; vtu/msh/medit also take surfaces)."),
    edge_mm: float = typer.Option(1.5, "--edge-mm", min=0.3, help="Edge length (mm) of the "
                                  "surface (remeshed; needs bvmesh[remesh]) and the tetrahedra."),
    rv_wall_mm: float = typer.Option(3.0, "--rv-wall-mm", min=0.5,
                                     help="RV free wall built when the labels have none (mm)."),
    base_slice: int = typer.Option(None, "--base-slice",
                                   help="0-based base slice as stored; default: from the labels."),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="Volume-keeping smoothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Mesh the LV + RV myocardium of a label map, tagged base/rv/lv/epi (ldrb markers)."""
    setup_logging(verbose)
    with exit_on_error():
        report = run_mesh(labels, output, label_map=label_map, tetra=tetra, fmt=fmt,
                          edge_mm=edge_mm, rv_wall_mm=rv_wall_mm, base_slice=base_slice,
                          smooth=smooth)
        _print(report, as_json)
        if not report["quality"]["passed"]:
            from ..errors import MeshQualityError

            raise MeshQualityError(
                f"{report['files'][0]}: written, but failed the quality gate on "
                f"{', '.join(report['quality']['failed'])}; see {report['report']}")


def output_path(labels: Path, output: Path | None, fmt: str | None, tetra: bool) -> Path:
    from ..io import case_name
    from ..mesh.export import FORMAT_SUFFIX

    if fmt is not None and fmt not in FORMAT_SUFFIX:
        raise typer.BadParameter(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if output is None:
        suffix = FORMAT_SUFFIX[fmt] if fmt else (".msh" if tetra else ".vtp")
        return labels.with_name(case_name(labels) + suffix)
    if fmt is not None and output.suffix.lower() != FORMAT_SUFFIX[fmt]:
        return output.with_suffix(FORMAT_SUFFIX[fmt])
    return output


def run_mesh(labels: Path, output: Path | None, *, label_map: str = "bvmesh",
             tetra: bool = False, fmt: str | None = None, edge_mm: float = 1.5,
             rv_wall_mm: float = 3.0, base_slice: int | None = None,
             smooth: bool = True) -> dict:
    """Read, translate, mesh, write mesh + report; return the report (no exit here)."""
    import numpy as np

    from .. import io
    from ..errors import InputError
    from ..labels import parse_label_map, to_bvmesh
    from ..mesh import prepare, remesh, surface_mesh, tetra_mesh, write_mesh

    path = output_path(labels, output, fmt, tetra)
    volume = io.load(labels)
    data = volume.data
    if not np.allclose(data, np.round(data)):
        raise InputError(f"{labels}: holds non-integer values; is this a label map, not an image?")
    mapping = parse_label_map(label_map)
    lab = to_bvmesh(np.round(data).astype(np.int64), mapping, source=str(labels))
    plane = None
    notes = list(volume.notes)
    if base_slice is not None:
        axis = int(np.argmax(volume.spacing)) if volume.spacing.max() > 1.5 * volume.spacing.min() \
            else None
        point, normal, why = prepare.base_plane_from_slice(lab, volume.affine, base_slice, axis)
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
        quality = {**mesh.quality, "surface": surf.quality}
        quality["passed"] = mesh.quality["passed"] and surf.quality["passed"]
        quality["failed"] = mesh.quality["failed"] + [f"surface.{f}" for f in surf.quality["failed"]]
    files = write_mesh(mesh, path)
    report_path = path.with_name(path.name.split(".")[0] + ".quality.json")
    report = {"input": str(labels), "labels": label_map, "files": [str(f) for f in files],
              "report": str(report_path), "tetra": tetra, "edge_mm": edge_mm,
              "quality": quality, "notes": notes,
              "base_plane_mm": {"point": [round(float(x), 4) for x in surf.base_plane[0]],
                                "normal": [round(float(x), 6) for x in surf.base_plane[1]]},
              "markers": {"base": 10, "rv": 20, "lv": 30, "epi": 40}}
    text = json.dumps(report, indent=2)
    io.atomic_write(report_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return report


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(report))
        return
    from rich.table import Table

    q = report["quality"]
    table = Table(title=f"bvmesh mesh -> {report['files'][0]}")
    for col in ("check", "value", "limit", "ok"):
        table.add_column(col)
    for name, item in q.items():
        if isinstance(item, dict) and "passed" in item and name != "surface":
            table.add_row(name, str(item["value"]), str(item.get("limit", "")),
                          "[green]yes[/]" if item["passed"] else "[red]NO[/]")
    out.print(table)
    for note in report["notes"]:
        err.print(f"[dim]note:[/] {note}", highlight=False, soft_wrap=True)
    if q["passed"]:
        out.print(f"quality gate passed; {len(report['files'])} file(s), report {report['report']}")
    else:
        err.print(f"[yellow]warning:[/] the mesh failed the quality gate on "
                  f"{', '.join(q['failed'])}; it was written anyway (exit code 3)")


def register(app: typer.Typer) -> None:
    app.command("mesh")(mesh_command)
