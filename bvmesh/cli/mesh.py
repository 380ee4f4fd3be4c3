"""`bvmesh mesh`: a label map -> a tagged, simulation-ready biventricular mesh.

Exit codes: 0 written and passed the quality gate; 1 bad input or failure; 2 bad usage;
3 written, but the mesh failed the quality gate (see <output>.quality.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .console import err, exit_on_error, out, setup_logging

#: The formats of bvmesh.mesh.export.FORMAT_SUFFIX, listed here so that --help needs no import.
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
        from ..mesh.labelmap import mesh_file

        if fmt is not None and fmt not in FORMATS:
            raise typer.BadParameter(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
        report = mesh_file(labels, output, label_map=label_map, tetra=tetra, fmt=fmt,
                           edge_mm=edge_mm, rv_wall_mm=rv_wall_mm, base_slice=base_slice,
                           smooth=smooth)
        _print(report, as_json)
        if not report["quality"]["passed"]:
            from ..errors import MeshQualityError

            raise MeshQualityError(
                f"{report['files'][0]}: written, but failed the quality gate on "
                f"{', '.join(report['quality']['failed'])}; see {report['report']}")


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(report))
        return
    from rich.markup import escape
    from rich.table import Table

    q = report["quality"]
    table = Table(title=escape(f"bvmesh mesh -> {report['files'][0]}"))
    for col in ("check", "value", "limit", "ok"):
        table.add_column(col)
    for name, item in q.items():
        if isinstance(item, dict) and "passed" in item and name != "surface":
            table.add_row(name, str(item["value"]), str(item.get("limit", "")),
                          "[green]yes[/]" if item["passed"] else "[red]NO[/]")
    out.print(table)
    for note in report["notes"]:
        err.print(f"[dim]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if q["passed"]:
        out.print(f"quality gate passed; {len(report['files'])} file(s), report "
                  f"{escape(report['report'])}", highlight=False)
    else:
        err.print(f"[yellow]warning:[/] the mesh failed the quality gate on "
                  f"{', '.join(q['failed'])}; it was written anyway (exit code 3)")


def register(app: typer.Typer) -> None:
    app.command("mesh")(mesh_command)
