"""What every command shares: the consoles and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import BvmeshError

#: Results go to stdout, progress and messages to stderr, so `--json` output stays clean.
out = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Turn a BvmeshError into one line on stderr and its exit code (1, or 3 for meshes)."""
    try:
        yield
    except BvmeshError as exc:
        # Escaped: a path like "scans/[2019]/a.nii.gz" must be shown, not read as markup.
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def setup_logging(verbose: bool) -> None:
    """Warnings from everyone; with ``verbose``, bvmesh's own stage messages too (never the
    debug chatter of matplotlib and the other libraries)."""
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False)])
    logging.getLogger("bvmesh").setLevel(logging.DEBUG if verbose else logging.WARNING)


#: What --device accepts; checked here (no torch import) so a typo is bad usage (exit 2).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_option(value: str) -> str:
    """Typer callback for --device."""
    if value is not None and not DEVICE_PATTERN.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda[:N] or mps")
    return value
