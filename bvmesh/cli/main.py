"""`bvmesh` entry point. Commands live in sibling modules and import heavy packages lazily."""

from __future__ import annotations

import importlib

import typer

from .. import __version__

app = typer.Typer(
    name="bvmesh",
    help="Biventricular myocardium segmentation of short-axis cardiac MRI, and meshes from it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Each module defines register(app).
COMMAND_MODULES = ("segment", "demo", "mesh", "train", "evaluate", "weights", "summary")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bvmesh {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """bvmesh: short-axis MRI -> 3D-consistent LV + RV myocardium -> simulation-ready mesh."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def main() -> None:
    app()
