"""`bvmesh evaluate PRED GT`: score predicted label maps against ground truth.

Results go to stdout (a table, or the summary JSON with --json); progress and per-case
problems go to stderr. Exit code 1 when any case failed, had no prediction or an empty
one (after every other case was scored and the outputs written); 2 for bad usage.

With --cases, --held-out scores only the subjects the weights never saw, and --folds K
scores each fold model of a `bvmesh train --fold all` run on its own held-out subjects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .console import device_option, err, exit_on_error, out, setup_logging

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .. import evaluate as ev_mod
    from ..errors import InputError
    from ..labels import parse_label_map

    if cases is not None and (pred is not None or gt is not None):
        raise typer.BadParameter("give either PRED GT or --cases DATA_DIR, not both")
    if cases is None and (pred is None or gt is None):
        raise typer.BadParameter("give PRED and GT (files or folders), or --cases DATA_DIR")
    if cases is None and (held_out or folds is not None):
        raise typer.BadParameter("--held-out and --folds go with --cases DATA_DIR")
    if folds is not None and weights is None:
        raise typer.BadParameter("--folds K needs --weights RUN_DIR (the folder of "
                                 "`bvmesh train --fold all -o RUN_DIR`)")
    setup_logging(verbose)
    iso = isotropic_mm or None
    with exit_on_error():
        if cases is not None:
            pred_labels = "bvmesh"
        structures = ev_mod.scored_structures(parse_label_map(labels),
                                              parse_label_map(pred_labels))
        if not structures:
            raise InputError(f"label maps {labels!r} (ground truth) and {pred_labels!r} "
                             "(prediction) share no structure to score")
        plan = []
        if cases is not None:
            todo = ev_mod.find_image_cases(cases)
            unpaired = []
            options = dict(labels=labels, device=device, propagation=propagation, fusion=fusion,
                           plausibility=plausibility, base_from_gt=base_from_gt, isotropic_mm=iso,
                           save_dir=output / "predictions")
            if folds is not None or held_out:
                plan, models = _held_out_plan(cases, todo, weights, folds, device, ev_mod)
                todo = [p for fold in plan for p in fold.pairs]
                stream = ev_mod.segment_and_score_folds(plan, models, **options)
            else:
                stream = ev_mod.segment_and_score(todo, weights=weights, **options)
        else:
            pairs = ev_mod.find_pairs(pred, gt)
            todo = [p for p in pairs if p.gt is not None]
            unpaired = [p for p in pairs if p.gt is None]
            stream = ev_mod.iter_file_cases(todo, labels=labels, pred_labels=pred_labels,
                                            structures=structures, isotropic_mm=iso)
        for p in unpaired:
            err.print(f"[yellow]warning:[/] {p.case}: prediction {p.pred} has no ground truth; "
                      "not scored", highlight=False, soft_wrap=True)
        results = []
        with Progress(TextColumn("segmenting and scoring" if cases else "scoring"),
                      BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                      console=err, transient=True) as progress:
            task = progress.add_task("", total=len(todo))
            for result in stream:
                results.append(result)
                _report_case(result, ev_mod)
                progress.update(task, advance=1, description=result.case)
        evaluation = ev_mod.Evaluation(results, structures, labels, pred_labels, unpaired, iso,
                                       plan)
        written = ev_mod.write_results(evaluation, output, plots=plots)
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


def _held_out_plan(data_dir: Path, pairs, weights: str | None, folds: int | None,
                   device: str, ev_mod) -> tuple[list, list]:
    """Load the model(s) once each, read their held-out subjects and assign the cases.

    Returns (folds, models); warnings and what is scored go to stderr.
    """
    from rich.markup import escape

    from ..pipeline import load_weights

    if folds is not None:
        paths = ev_mod.fold_weights(weights, folds)  # every fold present before any loading
        sources = [str(p) for p in paths]
        models = [load_weights(src, device)[0] for src in sources]
    else:
        model, info = load_weights(weights, device)
        sources, models = [weights or info["name"] or info["path"]], [model]
    held = [(src, ev_mod.recorded_held_out(m, src)) for src, m in zip(sources, models)]
    plan, warnings = ev_mod.plan_folds(data_dir, pairs, held, indexed=folds is not None)
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    by = f"folds 0..{folds - 1} of {weights}" if folds is not None else sources[0]
    err.print(f"scoring {sum(len(f.pairs) for f in plan)} of the {len(pairs)} cases in "
              f"{data_dir}: those held out by {by}", highlight=False, soft_wrap=True,
              markup=False)
    return plan, models


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
