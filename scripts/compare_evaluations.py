"""Two `bvmesh evaluate` runs side by side: Dice per structure, and on the apical slices.

    python scripts/compare_evaluations.py results/with results/without [--names with,without]
    python scripts/compare_evaluations.py results/a0+results/a1 results/b0+results/b1   # pooled

Reads each run's cases.csv and slices.csv (a run named as folders joined by "+" pools
them, e.g. the folds of a cross-validation). "Apical" is the apical third of each volume's
labelled slices (slices.csv's relative_position > 2/3), where plausibility rules act.
Then, over the cases both runs scored: the second run's Dice minus the first's per
structure (mean, its standard error, in how many cases it is higher) and the LV
myocardium's HD95 in each.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

STRUCTURES = ("lv_pool", "lv_myo", "rv_pool")


def _rows(run: str, name: str) -> list[dict]:
    """The rows of file ``name`` in every folder of ``run`` (folders joined by "+")."""
    rows = []
    for folder in run.split("+"):
        with (Path(folder) / name).open(newline="", encoding="utf-8") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def _floats(values) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def summary(run: str) -> dict[str, tuple[float, float, float]]:
    """structure -> (mean Dice, median Dice, mean apical-third slice Dice)."""
    cases, slices = _rows(run, "cases.csv"), _rows(run, "slices.csv")
    out = {}
    for s in STRUCTURES:
        dice = _floats(r[f"{s}_dice"] for r in cases if r["status"] == "ok")
        apical = _floats(r["dice"] for r in slices
                         if r["structure"] == s and float(r["relative_position"]) > 2 / 3)
        out[s] = (statistics.mean(dice), statistics.median(dice), statistics.mean(apical))
    return out


def paired(a: str, b: str) -> list[str]:
    """Lines: per structure, b's Dice minus a's over the cases both scored; LV myocardium
    HD95 mean (median) in each."""
    rows_a, rows_b = ({r["case"]: r for r in _rows(run, "cases.csv") if r["status"] == "ok"}
                      for run in (a, b))
    cases = sorted(set(rows_a) & set(rows_b))
    lines = []
    for s in STRUCTURES:
        d = [float(rows_b[c][f"{s}_dice"]) - float(rows_a[c][f"{s}_dice"]) for c in cases]
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        lines.append(f"{s} Dice, second minus first over {len(d)} cases: mean "
                     f"{statistics.mean(d):+.4f} (standard error {se:.4f}), higher in "
                     f"{sum(x > 0 for x in d)}")
    for run, rows in ((a, rows_a), (b, rows_b)):
        hd = [float(rows[c]["lv_myo_hd95_mm"]) for c in cases]
        lines.append(f"lv_myo HD95 mm, {run}: mean {statistics.mean(hd):.2f} "
                     f"(median {statistics.median(hd):.2f})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs=2, help="an evaluate folder, or folders joined by +")
    ap.add_argument("--names", default="A,B")
    args = ap.parse_args()
    names = args.names.split(",")
    a, b = (summary(r) for r in args.runs)
    print(f"| structure | Dice mean {names[0]} / {names[1]} | Dice median {names[0]} / {names[1]} "
          f"| apical-third slice Dice {names[0]} / {names[1]} |")
    print("|---|---|---|---|")
    for s in STRUCTURES:
        print(f"| {s} | {a[s][0]:.4f} / {b[s][0]:.4f} | {a[s][1]:.4f} / {b[s][1]:.4f} | "
              f"{a[s][2]:.4f} / {b[s][2]:.4f} |")
    print()
    print("\n".join(paired(*args.runs)))


if __name__ == "__main__":
    main()
