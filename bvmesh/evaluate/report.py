"""What an evaluation writes: cases.csv, slices.csv, summary.json, results.md and the plots.

:func:`case_rows` and :func:`slice_rows` give the CSV tables (undefined values are
``n/a``), :func:`markdown` the results.md report, and :func:`write_results` writes them
all atomically, with the PNG plots of :mod:`.plots`. :func:`fmt`, :func:`cell` and
:data:`TABLE_METRICS` format numbers the same way for the terminal tables.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from pathlib import Path

from .. import io as bio
from ..errors import OutputError
from . import plots as bplots
from .scoring import EMPTY, FAILED, METRICS, MISSING, SHORT, TITLES
from .summary import Evaluation

NA = "n/a"


def fmt(value: float | None, digits: int = 4) -> str:
    """A number with ``digits`` decimals, or n/a when undefined."""
    if value is None or not math.isfinite(value):
        return NA
    return f"{value:.{digits}f}"


def case_rows(ev: Evaluation) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of cases.csv (undefined or unscored values are "n/a")."""
    folds = any(c.fold is not None for c in ev.cases)
    columns = ["case"] + (["fold"] if folds else []) + [
        "status", "message", "slice_axis", "base_slice", "apex_slice", "n_slices", "slice_mm"]
    columns += [f"{s}_{m}" for s in ev.structures for m in METRICS]
    if "lv_myo" in ev.structures:
        columns += ["lv_mass_gt_g", "lv_mass_pred_g", "lv_mass_err_g"]
    if any(c.base_pred is not None for c in ev.cases):
        columns.insert(columns.index("base_slice") + 1, "base_slice_pred")
    qc = any(c.qc for c in ev.cases)
    columns += ["seconds", "segment_seconds"] + (["qc", "qc_checks", "removed"] if qc else []) \
        + ["pred", "gt"]
    rows = []
    for c in ev.cases:
        row = {k: NA for k in columns}
        row.update(case=c.case, status=c.status, message="; ".join(c.messages),
                   pred=c.pred or "", gt=c.gt or "", seconds=f"{c.seconds:.3f}",
                   segment_seconds=fmt(c.segment_seconds, 2))
        if qc:
            row.update(qc=c.qc, qc_checks=c.qc_checks, removed=c.removed)
        if c.base_pred is not None:
            row["base_slice_pred"] = str(c.base_pred)
        if folds:
            row["fold"] = "" if c.fold is None else str(c.fold)
        if c.slice_range is not None:
            r = c.slice_range
            row.update(slice_axis=str(r.axis), base_slice=str(r.base), apex_slice=str(r.apex),
                       n_slices=str(r.hi - r.lo + 1), slice_mm=fmt(c.slice_mm, 3))
        for s, values in c.scores.items():
            for m in METRICS:
                row[f"{s}_{m}"] = fmt(values[m])
        if "lv_myo" in ev.structures:
            row.update(lv_mass_gt_g=fmt(c.lv_mass_gt_g, 2),
                       lv_mass_pred_g=fmt(c.lv_mass_pred_g, 2),
                       lv_mass_err_g=fmt(c.lv_mass_pred_g - c.lv_mass_gt_g, 2))
        rows.append(row)
    return columns, rows


def slice_rows(ev: Evaluation) -> list[dict[str, str]]:
    """Slice-wise Dice, one row per case, structure and slice (base first)."""
    rows = []
    for c in ev.cases:
        if c.slice_range is None:
            continue
        order = c.slice_range.order
        n = len(order)
        for s, curve in c.slice_dice.items():
            for pos, (k, d) in enumerate(zip(order, curve)):
                rows.append({"case": c.case, "structure": s, "slice": str(int(k)),
                             "from_base": str(pos),
                             "from_base_mm": fmt(pos * c.slice_mm, 2),
                             "relative_position": fmt(pos / (n - 1) if n > 1 else 0.0, 4),
                             "dice": fmt(d)})
    return rows


def _csv_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


#: Metrics in the Markdown / terminal tables: (key, header, digits).
TABLE_METRICS: tuple[tuple[str, str, int], ...] = (
    ("dice", "Dice", 3), ("hd95_mm", "HD95 (mm)", 2), ("assd_mm", "ASSD (mm)", 2),
    ("vol_err_ml", "Vol. error (ml)", 1), ("consistency", "Slice jump", 3),
    ("dice_iso", "Dice iso", 3),
)


def cell(stats: dict, digits: int) -> str:
    """``mean ± std`` of a stats dict, the value alone for one case, or n/a."""
    if not stats.get("n"):
        return NA
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown(summary: dict) -> str:
    """results.md: a table per structure (mean ± std over scored cases) and counts."""
    lines = (_md_intro(summary) + _md_means(summary) + _md_medians(summary)
             + _md_folds(summary) + _md_lv_mass(summary) + _md_problems(summary))
    return "\n".join(lines) + "\n"


def _md_intro(summary: dict) -> list[str]:
    c = summary["counts"]
    return [
        "# Evaluation results", "",
        f"Ground truth labels `{summary['labels']}`, prediction labels "
        f"`{summary['pred_labels']}`; {c['scored']} of {c['cases']} cases scored "
        f"({c[FAILED]} failed, {c[MISSING]} without prediction, {c[EMPTY]} empty "
        f"predictions, {c['unpaired_predictions']} predictions without ground truth).", "",
        "Mean ± std over cases, on the ground truth's labelled slices. HD95 and ASSD on "
        "surface voxels in mm with the file's spacing; volume error = prediction - ground "
        "truth; slice jump = mean |Dice change| between neighbouring slices; Dice iso on a "
        f"{summary['isotropic_mm']} mm isotropic grid between base and apex slices.", "",
    ]


def _md_means(summary: dict) -> list[str]:
    lines = ["| Structure | n | " + " | ".join(h for _, h, _ in TABLE_METRICS) + " |",
             "|---|---:|" + "---:|" * len(TABLE_METRICS)]
    for s, stats in summary["structures"].items():
        lines.append(f"| {TITLES[s]} | {stats['dice']['n']} | "
                     + " | ".join(cell(stats[m], d) for m, _, d in TABLE_METRICS) + " |")
    return lines


def _md_medians(summary: dict) -> list[str]:
    lines = ["", "Medians [IQR]:", "",
             "| Structure | " + " | ".join(h for _, h, _ in TABLE_METRICS) + " |",
             "|---|" + "---:|" * len(TABLE_METRICS)]
    for s, stats in summary["structures"].items():
        cells = []
        for m, _, d in TABLE_METRICS:
            st = stats[m]
            cells.append(f"{st['median']:.{d}f} [{st['q1']:.{d}f}, {st['q3']:.{d}f}]"
                         if st.get("n") else NA)
        lines.append(f"| {TITLES[s]} | " + " | ".join(cells) + " |")
    return lines


def _md_folds(summary: dict) -> list[str]:
    """Mean Dice per fold (``--folds``), or which model's held-out cases (``--held-out``)."""
    folds = [f for f in summary.get("folds", []) if f["fold"] is not None]
    if folds:
        names = list(summary["structures"])
        lines = ["", "Mean Dice per fold (each fold's model on the subjects it never saw):", "",
                 "| Fold | subjects | scored | " + " | ".join(SHORT[s] for s in names) + " |",
                 "|---:|---:|---:|" + "---:|" * len(names)]
        for f in folds:
            dice = [f["structures"][s]["dice"] for s in names]
            lines.append(f"| {f['fold']} | {len(f['held_out_subjects'])} | {f['scored']} | "
                         + " | ".join(fmt(d, 3) for d in dice) + " |")
        return lines
    if summary.get("folds"):
        f = summary["folds"][0]
        return ["", f"Held-out cases only: the {len(f['held_out_subjects'])} subjects "
                    f"`{f['weights']}` never saw in training."]
    return []


def _md_lv_mass(summary: dict) -> list[str]:
    mass = summary.get("lv_mass_g")
    if not (mass and mass["agreement"].get("n")):
        return []
    a = mass["agreement"]
    return ["", f"LV mass (1.05 g/ml): ground truth {cell(mass['gt'], 1)} g, prediction "
                f"{cell(mass['pred'], 1)} g, bias {a['bias']:.1f} g"
                + (f" (95% limits {a['loa_low']:.1f} to {a['loa_high']:.1f} g)."
                   if a.get("sd") is not None else ".")]


def _md_problems(summary: dict) -> list[str]:
    if not summary["problems"]:
        return []
    return (["", "Cases not scored cleanly:", ""]
            + [f"- `{p['case']}` ({p['status']}): {p['message']}" for p in summary["problems"]])


def write_results(ev: Evaluation, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write cases.csv, slices.csv, summary.json, results.md (and PNG plots) atomically."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from exc
    summary = ev.summary()
    columns, rows = case_rows(ev)
    texts = {
        "cases.csv": _csv_text(columns, rows),
        "slices.csv": _csv_text(["case", "structure", "slice", "from_base", "from_base_mm",
                                 "relative_position", "dice"], slice_rows(ev)),
        "summary.json": json.dumps(summary, indent=2) + "\n",
        "results.md": markdown(summary),
    }
    written = []
    for name, text in texts.items():
        written.append(bio.atomic_write(out_dir / name,
                                        lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")))
    if plots and any(c.scored for c in ev.cases):
        written += bplots.plot_all(ev, out_dir)
    return written
