"""Quality-control pictures: the input slices from base to apex with the label contours."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from .io import atomic_write

#: Drawn in this order: the walls first, then the pools, so that the endocardial edge (shared
#: by a pool and its wall) shows in the pool's colour and the epicardium in the wall's.
COLOURS = {2: "#40ff40", 4: "#ffd040", 1: "#ff4040", 3: "#40a0ff"}
NAMES = {1: "LV pool", 2: "LV myo", 3: "RV pool", 4: "RV myo"}


#: Pixels of the band between panels (it holds each panel's title), of the page's title
#: and of the legend below the panels.
GAP_PX, TITLE_PX, LEGEND_PX = 18, 22, 30


def _slice(a: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(a, index, axis=axis)


def montage(image: np.ndarray, labels: np.ndarray, path: str | os.PathLike, *, slice_axis: int,
            order: list[int], title: str = "", marks: dict[int, str] | None = None,
            spacing: np.ndarray | None = None) -> Path:
    """Write a PNG of ``image`` slices in ``order`` (base first) with label contours.

    Slices are shown as stored (rows = first in-plane voxel axis), with the pixel
    aspect ratio of the voxel spacing, so what you see is the data, not a reoriented copy.
    ``marks`` labels chosen slices (e.g. ``{12: "base", 7: "init"}``). The panels are
    composed in numpy, each contour the structure's edge pixels (drawing contours panel by
    panel with matplotlib took seconds), on a bvmesh.canvas page with their titles.
    """
    from .canvas import Page

    n = len(order)
    cols = min(6, n)
    rows = int(np.ceil(n / cols))
    lo, hi = np.percentile(image, [1, 99.5])
    in_plane = [a for a in range(3) if a != slice_axis]
    aspect = 1.0 if spacing is None else spacing[in_plane[0]] / spacing[in_plane[1]]
    h, w = (image.shape[a] for a in in_plane)
    shown = max(1, int(round(h * aspect)))  # panel rows on the page: square pixels
    stretch = np.minimum((np.arange(shown) / aspect).astype(int), h - 1)
    top_px = TITLE_PX if title else 4
    page = Page(max(cols * (w + 4) - 4, 500), top_px + rows * (shown + GAP_PX) + LEGEND_PX)
    for k, index in enumerate(order):
        top = top_px + (k // cols) * (shown + GAP_PX) + GAP_PX
        left = (k % cols) * (w + 4)
        panel = _panel(_slice(image, slice_axis, index), _slice(labels, slice_axis, index), lo, hi)
        page.paste(panel[stretch], left, top)
        note = f" {marks[index]}" if marks and index in marks else ""
        page.text(left + w / 2, top - 3, f"slice {index}{note}")
    if title:
        page.text(page.image.width / 2, 4, title, size=12, anchor="mt")
    page.legend([(COLOURS[v], NAMES[v]) for v in sorted(COLOURS)], page.image.height - LEGEND_PX / 2)
    return page.save(path)


def _panel(image: np.ndarray, labels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """One slice as RGB in [0, 1] (grey between ``lo`` and ``hi``), each structure's edge
    pixels in its colour, walls first so that the pools' edges lie on top."""
    from .canvas import rgb as to_rgb

    grey = np.clip((image.astype(float) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, colour in COLOURS.items():
        mask = labels == value
        if mask.any():
            edge = mask & ~ndimage.binary_erosion(mask, border_value=1)
            rgb[edge] = to_rgb(colour)
    return rgb


#: Curve colours of volumes.png, the same as the contours of each structure.
CURVE_COLOURS = {"lv_pool_ml": COLOURS[1], "lv_myo_ml": COLOURS[2], "rv_pool_ml": COLOURS[3],
                 "rv_myo_ml": COLOURS[4]}


def volume_curves(volumes: dict[str, list[float]], path: str | os.PathLike, *, ed: int, es: int,
                  times_ms: tuple[float, ...] | None = None, title: str = "") -> Path:
    """Write a PNG of each structure's volume over the frames, ED and ES marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(next(iter(volumes.values())))
    x = np.asarray(times_ms if times_ms else range(n), float)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for key, values in volumes.items():
        name = NAMES[list(CURVE_COLOURS).index(key) + 1]
        ax.plot(x, values, "o-", ms=3, color=CURVE_COLOURS[key], label=name)
    for t, phase in ((ed, "ED"), (es, "ES")):
        ax.axvline(x[t], color="0.3", lw=0.8, ls="--")
        ax.annotate(f"{phase} (frame {t})", (x[t], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -12), textcoords="offset points", fontsize=8)
    ax.set_xlabel("trigger time (ms)" if times_ms else "frame")
    ax.set_ylabel("volume (ml)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, ncol=4, loc="lower center")
    if title:
        ax.set_title(title, fontsize=9)
    path = atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)
    return path
