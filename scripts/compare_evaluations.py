"""Two `bvmesh evaluate` runs side by side: Dice per structure, and on the apical slices.

    python scripts/compare_evaluations.py results/with results/without [--names with,without]

Reads each run's cases.csv and slices.csv. "Apical" is the apical third of each volume's
labelled slices (slices.csv's relative_position > 2/3), where plausibility rules act.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

STRUCTURES = ("lv_pool", "lv_myo", "rv_pool")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _floats(values) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def summary(run: Path) -> dict[str, tuple[float, float, float]]:
    """structure -> (mean Dice, median Dice, mean apical-third slice Dice)."""
    cases, slices = _rows(run / "cases.csv"), _rows(run / "slices.csv")
    out = {}
    for s in STRUCTURES:
        dice = _floats(r[f"{s}_dice"] for r in cases if r["status"] == "ok")
        apical = _floats(r["dice"] for r in slices
                         if r["structure"] == s and float(r["relative_position"]) > 2 / 3)
        out[s] = (statistics.mean(dice), statistics.median(dice), statistics.mean(apical))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs=2)
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


if __name__ == "__main__":
    main()
