"""`bvmesh demo`: segment and mesh the shipped example scan, no input or network needed."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import device_option, exit_on_error, setup_logging
from .segment import run_segment


def demo_command(
    output: Path = typer.Option(Path("out"), "-o", "--output", help="Output folder."),
    device: str = typer.Option("auto", "--device", callback=device_option,
                               help="auto, cpu, cuda[:N] or mps."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Segment the shipped Sunnybrook example (CC0) into OUTPUT/sunnybrook-SC-HF-I-6/."""
    setup_logging(verbose)
    with exit_on_error():
        from ..outputs import MeshOptions

        code = run_segment([], output, base_slice=None, base_slices=None, slice_axis=None, frame=None,
                           roi=None, weights=None, cache_dir=None, offline=True, device=device,
                           propagation=True, rv_wall_mm=3.0, save_probabilities=False,
                           mesh=MeshOptions(),
                           skip_existing=False, as_json=False, example=True)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
