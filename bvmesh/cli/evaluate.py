"""`bvmesh evaluate PRED GT`: score predicted label maps against ground truth.

Results go to stdout (a table, or the summary JSON with --json); progress and per-case
problems go to stderr. Exit code 1 when any case failed, had no prediction or an empty
one (after every other case was scored and the outputs written); 2 for bad usage.

With --cases, --held-out scores only the subjects the weights never saw, and --folds K
scores each fold model of a `bvmesh train --fold all` run on its own held-out subjects.

The work is :func:`bvmesh.evaluate.run_evaluation`; this module parses the options, calls
it and prints what it reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .console import device_option, err, exit_on_error, out, setup_logging

if TYPE_CHECKING:
    from ..evaluate import CaseResult, EvaluationPlan

_LABEL_HELP = ("Label map of the {}: bvmesh, acdc, mnms, binary, or explicit "
               "'1=rv_pool,2=lv_myo,3=lv_pool'.")


def _label_map(value: str) -> str:
    from ..errors import InputError
    from ..labels import parse_label_map

    try:
        parse_label_map(value)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    pred: Annotated[Path | None, typer.Argument(
        help="Predicted label map file, or a folder of them (<case>.nii.gz or "
             "<case>/labels.nii.gz).", show_default=False)] = None,
    gt: Annotated[Path | None, typer.Argument(
        help="Ground-truth label map file, or a folder of them (<case>.nii.gz or "
             "<case>_gt.nii.gz, searched recursively).", show_default=False)] = None,
    labels: Annotated[str, typer.Option(
        "--labels", callback=_label_map, help=_LABEL_HELP.format("ground truth"))] = "bvmesh",
    pred_labels: Annotated[str, typer.Option(
        "--pred-labels", callback=_label_map,
        help=_LABEL_HELP.format("predictions"))] = "bvmesh",
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Folder for cases.csv, slices.csv, summary.json, results.md "
                               "and the PNG plots.")] = Path("results"),
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the summary JSON on stdout instead of the table.")] = False,
    isotropic_mm: Annotated[float, typer.Option(
        "--isotropic-mm", min=0.0,
        help="Grid step (mm) of the isotropic Dice below the base; 0 skips it.")] = 1.25,
    plots: Annotated[bool, typer.Option("--plots/--no-plots",
                                        help="Draw the PNG plots.")] = True,
    cases: Annotated[Path | None, typer.Option(
        "--cases", help="Instead of PRED GT: a folder of images with <case>_gt label maps "
                        "beside them (ACDC layout); segment each image, then score it. "
                        "Predictions go to OUTPUT/predictions/<case>/labels.nii.gz.",
        show_default=False)] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", help="With --cases: weights name, file or URL (default: the bundled "
                          "model); with --folds: the run folder holding fold0/model.pt, ...",
        show_default=False)] = None,
    held_out: Annotated[bool, typer.Option(
        "--held-out", help="With --cases: score only the cases of the subjects the weights "
                           "never saw in training (as bvmesh train recorded them).")] = False,
    folds: Annotated[int | None, typer.Option(
        "--folds", min=2, metavar="K",
        help="With --cases and --weights RUN_DIR: cross-validation; each fold's model "
             "(RUN_DIR/foldN/model.pt from bvmesh train --fold all) segments its own "
             "held-out subjects, all pooled into one evaluation.", show_default=False)] = None,
    device: Annotated[str, typer.Option(
        "--device", callback=device_option,
        help="With --cases: auto, cpu, cuda[:N] or mps.")] = "auto",
    propagation: Annotated[bool, typer.Option(
        "--propagation/--no-propagation",
        help="With --cases: propagate from one slice (the method) or segment every slice "
             "alone (the paper's ablation).")] = True,
    fusion: Annotated[bool, typer.Option(
        "--fusion/--no-fusion",
        help="With --cases: anchor each propagated mask to the initialisation network's "
             "reading of its slice (default), or propagate alone as the paper.")] = True,
    plausibility: Annotated[bool, typer.Option(
        "--plausibility/--no-plausibility",
        help="With --cases: remove what no heart has before scoring (default), or not.")] = True,
    base_from_gt: Annotated[bool, typer.Option(
        "--base-from-gt", help="With --cases: give the ground truth's base slice to the "
                               "segmentation, as the paper's manual base.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                          help="Log details to stderr.")] = False,
) -> None:
    """Score predictions against ground truth: Dice, HD95, ASSD, volumes, LV mass, slice-wise
    Dice from base to apex, per case and structure, on the ground truth's slices."""
    # A long signature: typer reads the options from it; the body checks, calls, prints.
    from .. import evaluate as ev_mod
    from ..errors import InputError

    try:
        ev_mod.check_run_options(pred, gt, cases=cases, weights=weights, held_out=held_out,
                                 folds=folds)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    setup_logging(verbose)
    reporter = _Reporter(cases, weights, folds, ev_mod)
    with exit_on_error():
        try:
            evaluation, written = ev_mod.run_evaluation(
                pred, gt, cases=cases, output=output, labels=labels, pred_labels=pred_labels,
                isotropic_mm=isotropic_mm, plots=plots, weights=weights, held_out=held_out,
                folds=folds, device=device, propagation=propagation, fusion=fusion,
                plausibility=plausibility, base_from_gt=base_from_gt, on_plan=reporter.plan,
                on_case=reporter.case, on_scored=reporter.stop)
        finally:
            reporter.stop()
    summary = evaluation.summary()
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        _print_tables(evaluation, summary, ev_mod)
        err.print(f"wrote {len(written)} files to {output}", highlight=False)
    if evaluation.exit_code:
        c = summary["counts"]
        err.print(f"[bold red]error:[/] {c[ev_mod.FAILED]} case(s) failed, {c[ev_mod.MISSING]} "
                  f"without prediction, {c[ev_mod.EMPTY]} with an empty prediction "
                  f"(see {output / 'summary.json'})", highlight=False)
        raise typer.Exit(evaluation.exit_code)


class _Reporter:
    """Prints what run_evaluation tells on stderr: its plan, then a progress bar and each
    case's problems while it scores."""

    def __init__(self, cases: Path | None, weights: str | None, folds: int | None, ev_mod) -> None:
        self.cases, self.weights, self.folds, self.ev_mod = cases, weights, folds, ev_mod
        self.progress = self.task = None

    def plan(self, plan: EvaluationPlan) -> None:
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        for w in plan.warnings:
            err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
        if plan.folds:
            by = (f"folds 0..{self.folds - 1} of {self.weights}" if self.folds is not None
                  else plan.folds[0].weights)
            err.print(f"scoring {plan.total} of the {plan.found} cases in {self.cases}: those "
                      f"held out by {by}", highlight=False, soft_wrap=True, markup=False)
        for p in plan.unpaired:
            err.print(f"[yellow]warning:[/] {p.case}: prediction {p.pred} has no ground truth; "
                      "not scored", highlight=False, soft_wrap=True)
        self.progress = Progress(
            TextColumn("segmenting and scoring" if plan.segmenting else "scoring"), BarColumn(),
            MofNCompleteColumn(), TextColumn("{task.description}"), console=err, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("", total=plan.total)

    def case(self, result: CaseResult) -> None:
        _report_case(result, self.ev_mod)
        self.progress.update(self.task, advance=1, description=result.case)

    def stop(self) -> None:
        """End the progress bar (once scoring is done, or on an error); idempotent."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _report_case(result, ev_mod) -> None:
    from rich.markup import escape  # a path like "scans/[2019]/a.nii.gz" is not markup

    case = escape(result.case)
    if result.status in (ev_mod.FAILED, ev_mod.MISSING):
        err.print(f"[bold red]{result.status}:[/] {case}: {escape('; '.join(result.messages))}",
                  highlight=False, soft_wrap=True)
    elif result.status == ev_mod.EMPTY:
        err.print(f"[yellow]warning:[/] {case}: the prediction is empty; scored as "
                  "Dice 0", highlight=False, soft_wrap=True)
    else:
        for m in result.messages:
            if "outside" in m or "orthogonal" in m:
                err.print(f"[yellow]note:[/] {case}: {escape(m)}", highlight=False,
                          soft_wrap=True)


def _print_tables(evaluation, summary: dict, ev_mod) -> None:
    from rich.table import Table

    structures = evaluation.structures
    scored = [c for c in evaluation.cases if c.scored]
    if 1 < len(scored) <= 40:
        last = structures[-1]
        per_case = Table(title="Dice per case", title_justify="left")
        per_case.add_column("case", no_wrap=True)
        for s in structures:
            per_case.add_column(ev_mod.SHORT[s], justify="right")
        per_case.add_column(f"HD95 {ev_mod.SHORT[last]} (mm)", justify="right")
        for c in scored:
            per_case.add_row(c.case, *[ev_mod.fmt(ev_mod.metric_value(c, s, "dice"), 3)
                                       for s in structures],
                             ev_mod.fmt(ev_mod.metric_value(c, last, "hd95_mm"), 2))
        out.print(per_case)
    counts = summary["counts"]
    if not counts["scored"]:
        out.print(f"no case scored ({counts['cases']} found)", highlight=False)
        return
    # Metrics as rows, structures as columns: fits an 80-column terminal.
    how = "mean ± std" if counts["scored"] > 1 else "one case"
    table = Table(title=f"{counts['scored']} of {counts['cases']} cases scored, {how}",
                  title_justify="left")
    table.add_column("metric", no_wrap=True)
    for s in structures:
        table.add_column(ev_mod.SHORT[s], justify="right", no_wrap=True)
    stats = summary["structures"]
    table.add_row("n", *[str(stats[s]["dice"]["n"]) for s in structures])
    for m, header, digits in ev_mod.TABLE_METRICS:
        table.add_row(header, *[ev_mod.cell(stats[s][m], digits) for s in structures])
    out.print(table)
    folds = [f for f in summary.get("folds", []) if f["fold"] is not None]
    if folds:
        per_fold = Table(title="Mean Dice per fold", title_justify="left")
        per_fold.add_column("fold", justify="right")
        per_fold.add_column("scored", justify="right")
        for s in structures:
            per_fold.add_column(ev_mod.SHORT[s], justify="right")
        for f in folds:
            per_fold.add_row(str(f["fold"]), f"{f['scored']}/{f['cases']}",
                             *[ev_mod.fmt(f["structures"][s]["dice"], 3) for s in structures])
        out.print(per_fold)
    mass = summary.get("lv_mass_g")
    if mass and mass["pred"].get("n"):
        out.print(f"LV mass: ground truth {ev_mod.cell(mass['gt'], 1)} g, prediction "
                  f"{ev_mod.cell(mass['pred'], 1)} g", highlight=False)
