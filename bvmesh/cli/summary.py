"""`bvmesh summary`: merge the summaries of a cohort run in shards into one summary.csv."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import err, exit_on_error, setup_logging


def summary_command(
    output: Path = typer.Argument(..., help="The -o folder the shards wrote into."),
    as_json: bool = typer.Option(False, "--json", help="Print the merged summary as JSON."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Merge OUTPUT/summary.shard-I-of-N.csv into OUTPUT/summary.csv; exit 1 when a case
    failed or a shard is missing."""
    setup_logging(verbose)
    with exit_on_error():
        from rich.markup import escape

        from ..cohort import merge_summaries
        from .segment import print_rows

        rows, missing = merge_summaries(output)
        print_rows(rows, f"bvmesh summary -> {output}/summary.csv ({len(rows)} cases)", as_json,
                   extra={"output": str(output), "missing_shards": missing})
        failed = sum(r["status"] == "failed" for r in rows)
        if missing:
            err.print(f"[yellow]missing shard(s)[/] {escape(', '.join(missing))}: run them, "
                      "then bvmesh summary again", highlight=False)
        if failed:
            err.print(f"{failed} case(s) failed; see the message column", highlight=False)
    raise typer.Exit(1 if missing or failed else 0)


def register(app: typer.Typer) -> None:
    app.command("summary")(summary_command)
