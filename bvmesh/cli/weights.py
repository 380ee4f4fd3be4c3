"""`bvmesh weights ...`: list, fetch, install and verify pretrained weights files.

Never imports torch: weights are files and hashes here (see bvmesh.weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .console import err, exit_on_error, out

weights_app = typer.Typer(
    help="Pretrained weights: list models, download or install files, verify the cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_CACHE_HELP = ("Weights cache folder (default: $BVMESH_CACHE_DIR, else the user cache, see "
               "`bvmesh weights path`).")
CACHE_DIR_OPTION = typer.Option(None, "--cache-dir", help=_CACHE_HELP, show_default=False)


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # unreachable; keeps type checkers content


@weights_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list of models)."),
    cache_dir: Path | None = CACHE_DIR_OPTION,
) -> None:
    """List known models and which are installed (bundled, cached, or missing)."""
    from ..weights import inventory

    with exit_on_error():
        rows = inventory(cache_dir=cache_dir)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    # One block per model rather than a table: readable in an 80-column terminal and in logs.
    for r in rows:
        default = " [bold](default)[/]" if r["default"] else ""
        installed = (f"[green]{r['installed']}[/]" if r["installed"]
                     else "[yellow]not installed[/]")
        version = f"v{r['version']}" if r["version"] else "local"
        out.print(f"[bold cyan]{r['name']}[/]{default}  {version}  {installed}  "
                  f"{_size(r['size'])}  {r['licence'] or 'licence unknown'}", highlight=False)
        if r["classes"]:
            out.print(f"    classes: {', '.join(r['classes'])}", highlight=False)
        if r["description"]:
            out.print(f"    {r['description']}", highlight=False)
        if r["training_data"]:
            out.print(f"    trained on: {r['training_data']}", highlight=False)
        if r["path"]:
            out.print(f"    {r['path']}", highlight=False, soft_wrap=True)


@weights_app.command("path")
def path(
    name: str | None = typer.Argument(None, help="A model name: print its file instead (offline, "
                                                 "hash-checked); fails if it is not installed."),
    cache_dir: Path | None = CACHE_DIR_OPTION,
) -> None:
    """Print the weights cache folder, or the file of an installed model."""
    from ..weights import cache_dir as resolve_cache_dir
    from ..weights import resolve

    with exit_on_error():
        if name is None:
            out.print(str(resolve_cache_dir(cache_dir)), highlight=False, soft_wrap=True)
        else:
            rw = resolve(name, cache_dir=cache_dir, offline=True)
            out.print(str(rw.path), highlight=False, soft_wrap=True)


@weights_app.command("download")
def download(
    names: Annotated[list[str], typer.Argument(help="Registered model names (or URLs) to fetch.")],
    cache_dir: Path | None = CACHE_DIR_OPTION,
    force: bool = typer.Option(False, "--force", help="Download again even if a good copy is "
                                                      "cached (repairs a damaged file)."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.1, show_default=False,
                                         help="Seconds without data before giving up (default "
                                              "$BVMESH_DOWNLOAD_TIMEOUT or 60)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download models into the cache now (e.g. to carry them to an offline machine).

    Prints each file's path on stdout; copy it and run `bvmesh weights install FILE` there.
    """
    from ..weights import fetch

    with exit_on_error():
        for name in names:
            rw = fetch(name, cache_dir=cache_dir, force=force, progress=not quiet, timeout=timeout)
            if rw.source == "cache":
                err.print(f"{rw.name or name}: already in the cache, hash ok", highlight=False)
            out.print(str(rw.path), highlight=False, soft_wrap=True)


@weights_app.command("install")
def install(
    file: Annotated[Path, typer.Argument(help="A weights file carried in by hand.")],
    name: str | None = typer.Option(None, "--name", help="Model name: a registered one (then the "
                                                         "hash must match) or a new local name."),
    cache_dir: Path | None = CACHE_DIR_OPTION,
) -> None:
    """Add a weights file to the cache, checked against the registry."""
    from ..weights import install as install_file

    with exit_on_error():
        rw = install_file(file, name=name, cache_dir=cache_dir)
    err.print(f"installed {rw.name} (sha256 {rw.sha256})", highlight=False)
    out.print(str(rw.path), highlight=False, soft_wrap=True)


@weights_app.command("verify")
def verify(
    cache_dir: Path | None = CACHE_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per file)."),
) -> None:
    """Rehash every cached and bundled file; exit 1 if any fails its check."""
    from ..weights import verify as verify_all

    with exit_on_error():
        checks = verify_all(cache_dir=cache_dir)
    if as_json:
        out.print_json(json.dumps([{"path": str(c.path), "name": c.name, "status": c.status,
                                    "expected": c.expected, "actual": c.actual, "ok": c.ok}
                                   for c in checks]))
    else:
        if not checks:
            err.print("no weights files installed", highlight=False)
        for c in checks:
            colour = "green" if c.status == "ok" else "yellow" if c.ok else "bold red"
            out.print(f"[{colour}]{c.status:10}[/] {c.name or '-'}  {c.message}",
                      highlight=False, soft_wrap=True)
    failed = [c for c in checks if not c.ok]
    if failed:
        err.print(f"[bold red]error:[/] {len(failed)} of {len(checks)} weights files failed "
                  "verification", highlight=False)
        raise typer.Exit(1)
