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

#: Each module defines register(app). A module that is not there yet is simply skipped.
COMMAND_MODULES = ("segment", "demo", "mesh", "train", "evaluate", "weights")


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
    try:
        _module = importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    app()
