"""`bvmesh segment`: one case, a folder, a glob, or many, into out/<case>/."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .console import device_option, err, exit_on_error, out, setup_logging

if TYPE_CHECKING:  # the library loads torch: imported when the command runs, not for --help
    from ..cases import CaseOutcome, Segmenter
    from ..cohort import Shard
    from ..outputs import MeshOptions

EXIT_CODES = "Exit codes: 0 all cases done; 1 a case failed or bad input; 2 bad usage; " \
             "3 segmented, but a mesh failed its quality gate; 4 a case failed quality control " \
             "(report.json qc, summary.csv qc and qc_checks)."


def _roi(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        i, j = (float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter("--roi takes 'I,J': the heart centre in voxel indices along the "
                                 "two in-plane axes") from None
    return i, j


def _apex_sign(value: str | None) -> int | None:
    signs = {"increasing": 1, "decreasing": -1}
    if value is not None and value not in signs:
        raise typer.BadParameter(f"--apex-direction takes increasing or decreasing, not {value!r}")
    return None if value is None else signs[value]


MESH_FRAMES = ("ed-es", "all")


def _mesh_options(mesh: bool, edge_mm: float, apex: str, frames: str = "ed-es"):
    from ..mesh.apex import APEX_MODES
    from ..outputs import MeshOptions

    if apex not in APEX_MODES:
        raise typer.BadParameter(f"--apex {apex!r}: use {' or '.join(APEX_MODES)}")
    if edge_mm < 0:
        raise typer.BadParameter(f"--edge-mm {edge_mm:g}: give a length in mm, or 0 for none")
    if frames not in MESH_FRAMES:
        raise typer.BadParameter(f"--mesh-frames {frames!r}: use {' or '.join(MESH_FRAMES)}")
    return MeshOptions(edge_mm=edge_mm or None, apex=apex, frames=frames) if mesh else None


def _shard(value: str | None):
    from ..cohort import Shard
    from ..errors import InputError

    if value is None:
        return None
    try:
        return Shard.parse(value)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None


def _cine_options(ed, es, height_cm, weight_kg, temporal) -> dict:
    for name, value in (("--height-cm", height_cm), ("--weight-kg", weight_kg)):
        if value is not None and value <= 0:
            raise typer.BadParameter(f"{name} {value:g}: give a positive number")
    if (height_cm is None) != (weight_kg is None):
        raise typer.BadParameter("--height-cm and --weight-kg go together (body surface area)")
    return {"ed": ed, "es": es, "height_cm": height_cm, "weight_kg": weight_kg,
            "temporal": temporal}


def segment_command(
    inputs: list[str] = typer.Argument(None, help="Image files (.nii/.nii.gz/.mha/.nrrd), DICOM "
                                       "series folders, folders of images, or glob patterns."),
    output: Path = typer.Option(Path("out"), "-o", "--output", help="Output folder; each case "
                                "goes to OUTPUT/<case>/."),
    base_slice: int = typer.Option(None, "--base-slice", help="0-based index of the base slice "
                                   "along the slice axis, as stored. Default: detected."),
    base_slices: Path = typer.Option(None, "--base-slices",
                                     help="CSV 'case,base_slice' for cohorts (a summary.csv works)."),
    apex_direction: str = typer.Option(None, "--apex-direction", metavar="increasing|decreasing",
                                       help="Slice index toward the apex (default: detected)."),
    slice_axis: int = typer.Option(None, "--slice-axis", min=0, max=2, help="Voxel axis through the slices "
                                   "(0, 1, 2). Default: the one with the largest spacing."),
    frame: int = typer.Option(None, "--frame", help="Segment this frame (0-based) of a 4D "
                              "(cine) input alone. Default: every frame, as a cine."),
    ed: int = typer.Option(None, "--ed", help="End-diastolic frame of a cine (0-based). "
                           "Default: the largest LV blood pool."),
    es: int = typer.Option(None, "--es", help="End-systolic frame of a cine (0-based). "
                           "Default: the smallest LV blood pool."),
    height_cm: float = typer.Option(None, "--height-cm", help="Body height: a cine's function "
                                    "figures are also given per m² of body surface area."),
    weight_kg: float = typer.Option(None, "--weight-kg", help="Body weight (with --height-cm)."),
    temporal: bool = typer.Option(True, "--temporal/--no-temporal", help="Fuse each cine "
                                  "frame's probabilities with its neighbours' (default), or "
                                  "segment the frames independently."),
    mesh_frames: str = typer.Option("ed-es", "--mesh-frames", help="Cine frames to mesh: ed-es "
                                    "(mesh_ED, mesh_ES) or all (also mesh_fNN.vtp per frame)."),
    roi: str = typer.Option(None, "--roi", help="Heart centre 'I,J' in voxels along the in-plane "
                            "axes. Default: found by the locator network."),
    weights: str = typer.Option(None, "--weights", help="Registry name, file path or URL. "
                                "Default: the bundled model."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Weights cache (default: "
                                   "$BVMESH_CACHE_DIR or the user cache)."),
    offline: bool = typer.Option(False, "--offline", help="Never use the network."),
    device: str = typer.Option("auto", "--device", callback=device_option,
                               help="auto, cpu, cuda[:N] or mps."),
    propagation: bool = typer.Option(True, "--propagation/--no-propagation", help="Propagate "
                                     "from the middle slice (the paper), or segment every slice "
                                     "alone (the paper's ablation)."),
    fusion: bool = typer.Option(True, "--fusion/--no-fusion", help="Anchor each propagated "
                                "mask to the initialisation network's reading of its slice "
                                "(default), or propagate alone exactly as the paper."),
    plausibility: bool = typer.Option(True, "--plausibility/--no-plausibility", help="Remove "
                                      "what no heart has (an RV piece off the septum, tissue "
                                      "that outgrows the ventricles toward the apex); listed "
                                      "in report.json."),
    qc_strict: bool = typer.Option(False, "--qc-strict", help="A quality-control warning "
                                   "fails the case (exit 4) too."),
    rv_wall_mm: float = typer.Option(3.0, "--rv-wall-mm", help="Thickness of the geometric RV "
                                     "free wall when the model has no RV-myocardium class."),
    save_probabilities: bool = typer.Option(False, "--save-probabilities",
                                            help="Also write probabilities.nii.gz."),
    mesh: bool = typer.Option(True, "--mesh/--no-mesh", help="Write mesh.vtp, mesh.stl and "
                              "mesh.png."),
    edge_mm: float = typer.Option(1.5, "--edge-mm", help="Remesh the surface to edges of about "
                                  "this length (mm; needs bvmesh[remesh]); 0 keeps marching "
                                  "cubes' density."),
    apex: str = typer.Option("extrapolate", "--apex", help="When the labels end with a blood "
                             "pool open: extrapolate (a rounded cap) or flat (a lid)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip cases whose "
                                       "report.json exists (resume a cohort)."),
    shard: str = typer.Option(None, "--shard", help="I/N: segment share I (0-based) of N of the "
                              "cases, e.g. a SLURM array's $SLURM_ARRAY_TASK_ID/"
                              "$SLURM_ARRAY_TASK_COUNT; merge with bvmesh summary OUTPUT."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    workers: int = typer.Option(None, "--workers", min=1, show_default=False,
                                help="Processes for a cohort, each with its share of the cores. "
                                "Default: one per core for 8 cases or more (1.5 GB of memory "
                                "each), else 1."),
    dask: str = typer.Option(None, "--dask", help="Send the cases to a Dask cluster: its "
                             "scheduler's tcp://HOST:PORT or scheduler file (needs "
                             "bvmesh[dask]; workers must see the input and output paths)."),
    example: bool = typer.Option(False, "--example", help="Segment the shipped example scan."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Segment the LV and RV myocardium; write labels, mesh, qc.png and report.json per case."""
    # A long signature: typer reads the options from it; the body only builds and calls.
    setup_logging(verbose)
    with exit_on_error():
        from ..cases import Segmenter
        from ..pipeline import SegmentOptions

        options = SegmentOptions(slice_axis=slice_axis, roi=_roi(roi), propagation=propagation,
                                 fusion=fusion, rv_wall_mm=rv_wall_mm, plausibility=plausibility,
                                 qc_strict=qc_strict, probabilities=save_probabilities,
                                 apex_sign=_apex_sign(apex_direction))
        segmenter = Segmenter(options, weights, device, None if cache_dir is None else str(cache_dir),
                              offline or None, frame,
                              _cine_options(ed, es, height_cm, weight_kg, temporal))
        code = run_segment(inputs or [], output, segmenter, base_slice=base_slice,
                           base_slices=base_slices,
                           mesh=_mesh_options(mesh, edge_mm, apex, mesh_frames),
                           skip_existing=skip_existing, as_json=as_json, example=example,
                           shard=_shard(shard), workers=workers, dask=dask)
    raise typer.Exit(code)


def run_segment(inputs: list[str], output: Path, segmenter: Segmenter, *,
                base_slice: int | None = None, base_slices: Path | None = None,
                mesh: MeshOptions | None = None, skip_existing: bool = False,
                as_json: bool = False, example: bool = False, shard: Shard | None = None,
                workers: int | None = None, dask: str | None = None) -> int:
    """The command once parsed (shared with `bvmesh demo`): plan, run, print; returns the
    exit code."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .. import cohort
    from ..errors import InputError

    if example:
        from ..examples import EXAMPLE

        inputs = [*inputs, str(EXAMPLE)]
    if dask and workers not in (None, 1):
        raise typer.BadParameter("--workers and --dask: choose one (Dask's workers are the "
                                 "processes)")
    if not inputs:
        raise typer.BadParameter("no input given: pass image files, folders or globs (or --example)")
    todo = cohort.plan(inputs, base_slices=base_slices, shard=shard)
    if workers is None:
        from ..cases import auto_workers

        workers = 1 if dask else auto_workers(len(todo.paths))
    segmenter.model()  # bad weights fail before any case; workers then find them cached

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("segmenting", total=len(todo.paths))

        def on_case(o: cohort.CaseOutcome) -> None:
            bar.advance(task)
            if not todo.alone:  # a single input's failure is raised below as the one error line
                _print_case(o)

        with _sigterm_as_interrupt():
            outcomes = cohort.run(todo.paths, output, segmenter, base_slices=todo.base_slices,
                                  base_slice=base_slice, skip_existing=skip_existing,
                                  probabilities=segmenter.options.probabilities, mesh=mesh,
                                  on_case=on_case, alone=todo.alone,
                                  summary_name=todo.summary_name, workers=workers, dask=dask)
    if todo.alone and outcomes[0].status == "failed":
        # One bad input: one error line, no table (and cohort.run wrote nothing).
        if as_json:
            _print_summary(outcomes, output, as_json)
        raise InputError(outcomes[0].message)
    _print_summary(outcomes, output, as_json, todo.summary_name)
    return cohort.exit_code(outcomes)


def _print_case(o: CaseOutcome) -> None:
    """A finished case: one plain line in a log file or a cluster job; on a terminal (where
    the progress bar runs) only a failure."""
    from rich.markup import escape

    if not err.is_terminal:
        row = o.row()
        qc = f"qc {row['qc']}" + (f": {row['qc_checks']}" if row["qc_checks"] else "")
        print(f"{o.case}\t{o.status}\t{qc if row['qc'] else 'qc -'}\t{o.seconds:.1f} s"
              + (f"\t{o.message}" if o.message else ""), file=sys.stderr, flush=True)
    elif o.status == "failed":
        err.print(f"[red]failed[/] {escape(o.case)}: {escape(o.message)}", highlight=False,
                  soft_wrap=True)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A cluster's SIGTERM stops a cohort like Ctrl-C: cleanly, with the summary so far."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_summary(outcomes, output: Path, as_json: bool, name: str = "summary.csv") -> None:
    print_rows([o.row() for o in outcomes], f"bvmesh segment -> {output}/ ({name})", as_json,
               extra={"output": str(output), "failed": sum(o.status == "failed" for o in outcomes)})


def print_rows(rows: list[dict], title: str, as_json: bool, extra: dict | None = None) -> None:
    """A cohort's summary rows as a table on stdout (or JSON with ``extra`` fields)."""
    import json

    from rich.console import Console
    from rich.table import Table

    if as_json:
        out.print_json(json.dumps({**(extra or {}), "cases": rows}))
        return
    table = Table(title=title)
    shown = ("case", "status", "qc", "base_slice", "lv_pool_ml", "lv_myo_ml", "rv_pool_ml",
             "lv_mass_g", "mesh_passed", "seconds")
    if any(r.get("lv_ef_pct", "") != "" for r in rows):  # a cine: its ED volumes and the EFs
        shown = (*shown[:8], "ed_frame", "es_frame", "lv_ef_pct", "rv_ef_pct", *shown[8:])
    for name in shown:
        table.add_column(name, justify="left" if name in ("case", "status") else "right",
                         overflow="fold")  # a narrow terminal wraps a number, never cuts it
    for r in rows:
        style = {"failed": "red", "mesh-failed": "yellow", "skipped": "dim"}.get(r["status"])
        table.add_row(*(str(r[k]) for k in shown), style=style)
    # A log file gets the width the table needs, not 80 columns.
    (out if out.is_terminal else Console(width=200)).print(table)


def register(app: typer.Typer) -> None:
    app.command("segment", epilog=EXIT_CODES)(segment_command)
