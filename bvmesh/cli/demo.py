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
        from ..cases import Segmenter
        from ..outputs import MeshOptions

        code = run_segment([], output, Segmenter(device=device, offline=True), mesh=MeshOptions(),
                           example=True)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
