"""Median slice-wise Dice from base to apex for several `bvmesh evaluate` runs, one panel
per structure (the paper's Fig. 3, right, with and without propagation).

    python scripts/slice_curves.py OUT.png NAME=results/slices.csv [NAME=...]
    python scripts/slice_curves.py OUT.png pooled=results/fold0/slices.csv+results/fold1/slices.csv

Files joined by + are pooled into one curve (the folds of a cross-validation).

Each case's slices are placed on a common base (0) to apex (1) axis and binned in tenths;
the curve is the median over cases in each bin. The curves are also printed.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TITLES = {"lv_pool": "LV blood pool", "lv_myo": "LV myocardium", "rv_pool": "RV blood pool"}


def curves(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    bins: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(11)])
    rows = []
    for part in path.split("+"):
        with open(part, newline="") as fh:
            rows += list(csv.DictReader(fh))
    for row in rows:
        if row["structure"] in TITLES and row["dice"] not in ("", "n/a", "nan"):
            bins[row["structure"]][int(round(float(row["relative_position"]) * 10))].append(
                float(row["dice"]))
    x = np.linspace(0, 1, 11)
    return {s: (x, np.array([np.median(b) if b else np.nan for b in v])) for s, v in bins.items()}


def main() -> None:
    out, runs = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    fig, axes = plt.subplots(1, len(TITLES), figsize=(4 * len(TITLES), 3.2), sharey=True,
                             layout="constrained")
    for name, path in runs:
        for ax, (structure, (x, y)) in zip(axes, sorted(curves(path).items(),
                                                         key=lambda kv: list(TITLES).index(kv[0]))):
            ax.plot(x, y, marker="o", ms=3, label=name)
            ax.set_title(TITLES[structure])
            print(f"{name} | {TITLES[structure]} | base to apex: "
                  + " ".join(f"{v:.2f}" for v in y))
    for ax in axes:
        ax.set_xticks([0, 0.5, 1], ["base", "mid", "apex"])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("median Dice")
    axes[-1].legend(loc="lower left", fontsize=8)
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
