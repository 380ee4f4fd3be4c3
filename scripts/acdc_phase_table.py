"""Model-card tables from `bvmesh evaluate` results on ACDC: per structure, ED and ES apart.

    python scripts/acdc_phase_table.py ACDC_DIR NAME=results/cases.csv [NAME=...]
    python scripts/acdc_phase_table.py ACDC_DIR pooled=f0/cases.csv+f1/cases.csv+f2/cases.csv

ACDC names each frame file patientNNN_frameXX; the subject's Info.cfg says which frame is
ED and which is ES. Prints one Markdown table: for each run (NAME; files joined by + are
pooled into one run, e.g. the folds of a cross-validation), structure and phase, the
mean, median and worst Dice and HD95 (mm) over the scored cases.
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
from pathlib import Path

STRUCTURES = (("lv_pool", "LV blood pool"), ("lv_myo", "LV myocardium"), ("rv_pool", "RV blood pool"))


def phase_of(acdc: Path, case: str) -> str:
    subject, frame = re.match(r"(patient\d+)_frame(\d+)", case).groups()
    info = dict(line.split(":", 1) for line in (acdc / subject / "Info.cfg").read_text().splitlines()
                if ":" in line)
    if int(info["ED"]) == int(frame):
        return "ED"
    return "ES" if int(info["ES"]) == int(frame) else "?"


def values(rows: list[dict], key: str) -> list[float]:
    out = []
    for r in rows:
        try:
            out.append(float(r[key]))
        except (KeyError, ValueError):
            continue
    return [v for v in out if v == v]


def main() -> None:
    acdc = Path(sys.argv[1])
    print("| run | structure | phase | n | Dice mean | Dice median | Dice worst | HD95 mean (mm) "
          "| HD95 median (mm) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in sys.argv[2:]:
        name, paths = spec.split("=", 1)
        rows = [r for path in paths.split("+") for r in csv.DictReader(open(path))]
        for r in rows:
            r["phase"] = phase_of(acdc, r["case"])
        for key, label in STRUCTURES:
            for phase in ("ED", "ES", "all"):
                sel = [r for r in rows if phase == "all" or r["phase"] == phase]
                d, h = values(sel, f"{key}_dice"), values(sel, f"{key}_hd95_mm")
                if not d:
                    continue
                print(f"| {name} | {label} | {phase} | {len(d)} | {statistics.mean(d):.3f} | "
                      f"{statistics.median(d):.3f} | {min(d):.3f} | {statistics.mean(h):.1f} | "
                      f"{statistics.median(h):.1f} |")


if __name__ == "__main__":
    main()
