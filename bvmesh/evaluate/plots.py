"""Evaluation plots (matplotlib, Agg backend): slice-wise Dice, box plots, Bland-Altman.

Each function takes an :class:`~bvmesh.evaluate.Evaluation` and a path, draws one PNG
and writes it atomically. matplotlib is imported inside the functions so that
importing bvmesh stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io import atomic_write
from .scoring import TITLES, metric_value

if TYPE_CHECKING:
    from .summary import Evaluation

_COLOURS = {"lv_pool": "#d62728", "lv_myo": "#1f77b4", "rv_pool": "#ff7f0e",
            "rv_myo": "#2ca02c", "bv_myo": "#9467bd"}
#: Relative positions (0 base, 1 apex) on which the cohort median curve is drawn.
_GRID = np.linspace(0, 1, 21)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _grid(n: int, width: float = 4.0, height: float = 3.4):
    plt = _pyplot()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_slice_dice(ev: Evaluation, path: str | Path) -> Path:
    """Slice-wise Dice from base (0) to apex (1), one line per case, cohort median bold.

    As in the paper's Fig. 3 (right): a 3D-consistent method gives smooth curves.
    """
    structures = [s for s in ev.structures if any(s in c.slice_dice for c in ev.cases)]
    fig, axes = _grid(len(structures))
    cases = [c for c in ev.cases if c.scored]
    for ax, s in zip(axes, structures):
        resampled = []
        for c in cases:
            curve = c.slice_dice.get(s)
            if curve is None:
                continue
            x = np.linspace(0, 1, len(curve)) if len(curve) > 1 else np.zeros(1)
            ax.plot(x, curve, "-o", color=_COLOURS[s], alpha=0.35 if len(cases) > 1 else 0.9,
                    lw=1, ms=3, label=c.case if len(cases) <= 6 else None)
            ok = np.isfinite(curve)
            if ok.sum() > 1:
                # Cases have 6 to 20 slices: put each on a common base-apex axis first,
                # else the median jumps wherever a different set of cases has a slice.
                resampled.append(np.interp(_GRID, x[ok], curve[ok]))
        if len(resampled) > 1:
            ax.plot(_GRID, np.median(resampled, axis=0), "-", color="black", lw=2.2,
                    label=f"median of {len(resampled)}")
        ax.set_title(TITLES[s])
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_xticklabels(["base", "", "mid", "", "apex"])
        ax.set_ylabel("Dice")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Slice-wise Dice on the ground truth's slices, base to apex")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_boxes(ev: Evaluation, path: str | Path) -> Path:
    """Box plots of Dice, HD95 and ASSD, one box per structure, cases as dots."""
    plt = _pyplot()
    panels = (("dice", "Dice"), ("hd95_mm", "HD95 (mm)"), ("assd_mm", "ASSD (mm)"))
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 4.0), squeeze=False)
    cases = [c for c in ev.cases if c.scored]
    rng = np.random.default_rng(0)  # fixed jitter: the same results draw the same image
    for ax, (metric, label) in zip(axes.flat, panels):
        data, names, colours = [], [], []
        for s in ev.structures:
            v = np.array([metric_value(c, s, metric) for c in cases], float)
            v = v[np.isfinite(v)]
            if len(v):
                data.append(v)
                names.append(TITLES[s].replace(" ", "\n", 1))
                colours.append(_COLOURS[s])
        if not data:
            ax.set_visible(False)
            continue
        box = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
        for patch, colour in zip(box["boxes"], colours):
            patch.set_facecolor(colour)
            patch.set_alpha(0.35)
        for i, (v, colour) in enumerate(zip(data, colours), start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(v)), v, "o", color=colour, ms=3.5)
        ax.set_title(label)
        if metric == "dice":
            ax.set_ylim(min(0.5, min(float(v.min()) for v in data) - 0.05), 1.0)
        else:
            ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Per-structure scores over {len(cases)} case(s)")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_bland_altman(ev: Evaluation, path: str | Path) -> Path:
    """Bland-Altman of volumes (and LV mass): difference pred - gt against their mean."""
    cases = [c for c in ev.cases if c.scored]
    panels = []
    for s in ev.structures:
        gt = np.array([metric_value(c, s, "vol_gt_ml") for c in cases], float)
        pr = np.array([metric_value(c, s, "vol_pred_ml") for c in cases], float)
        panels.append((f"{TITLES[s]} volume", "ml", pr, gt, _COLOURS[s]))
    if "lv_myo" in ev.structures:
        panels.append(("LV mass", "g", np.array([c.lv_mass_pred_g for c in cases]),
                       np.array([c.lv_mass_gt_g for c in cases]), "#7f7f7f"))
    fig, axes = _grid(len(panels))
    for ax, (title, unit, pr, gt, colour) in zip(axes, panels):
        ok = np.isfinite(pr) & np.isfinite(gt)
        mean, diff = (pr[ok] + gt[ok]) / 2, pr[ok] - gt[ok]
        ax.scatter(mean, diff, color=colour, s=16)
        if len(diff):
            bias = float(diff.mean())
            ax.axhline(bias, color="black", lw=1.2, label=f"bias {bias:+.1f} {unit}")
            if len(diff) > 1:
                sd = float(diff.std(ddof=1))
                for sign in (-1, 1):
                    ax.axhline(bias + sign * 1.96 * sd, color="black", ls="--", lw=0.9,
                               label="±1.96 SD" if sign > 0 else None)
            ax.legend(fontsize=7, loc="best")
        ax.axhline(0, color="grey", lw=0.6)
        # Symmetric about zero, at least ±1 unit: a bias reads against "no difference".
        lim = max([1.0, *np.abs(ax.get_ylim())])
        ax.set_ylim(-lim, lim)
        ax.set_title(title)
        ax.set_xlabel(f"mean of prediction and ground truth ({unit})")
        ax.set_ylabel(f"prediction - ground truth ({unit})")
        ax.grid(alpha=0.3)
    fig.suptitle("Bland-Altman agreement")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_all(ev: Evaluation, out_dir: str | Path) -> list[Path]:
    """slice_dice.png, boxplot.png and bland_altman.png in ``out_dir``."""
    out_dir = Path(out_dir)
    return [plot_slice_dice(ev, out_dir / "slice_dice.png"),
            plot_boxes(ev, out_dir / "boxplot.png"),
            plot_bland_altman(ev, out_dir / "bland_altman.png")]
