"""Can the RV free wall's thickness be read from the image? Intensity profiles, measured.

    python scripts/rv_wall_profiles.py --phantoms 12
    python scripts/rv_wall_profiles.py ACDC/training/patient001/patient001_frame01.nii.gz ...

bvmesh builds the RV free wall as a shell of fixed thickness (``--rv-wall-mm``, 3 mm)
because its models have no RV-myocardium class. This script tries the obvious way to read
the thickness instead: from each free-wall pixel of the segmented RV pool (not within 8 mm
of the LV) a ray runs outward along the pool's in-plane normal; the wall is the run from
where the intensity falls below the pool/myocardium midpoint to where it leaves the
myocardium's range (back above that midpoint: fat; below half the myocardium's level:
lung). Reference levels are the medians of the eroded LV myocardium and blood pools; only
the middle 60 % of the RV's slices are read (the wall is oblique to the slice near the
base and the apex). Printed per scan: the median run (mm), its quartiles and the number
of rays, and for the synthetic scans of mesh_phantom_scans.py their true wall thickness.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Free-wall pixels lie at least this far (mm) from the LV (pool and myocardium).
FREE_WALL_MM = 8.0
#: Ray sampling: start inside the pool, step and reach (mm).
RAY_START, RAY_STEP, RAY_REACH = -2.0, 0.25, 12.0


def wall_runs(image: np.ndarray, labels: np.ndarray, spacing: tuple[float, float],
              slice_axis: int) -> np.ndarray:
    """The wall run (mm) of every ray that found one; labels are bvmesh's (1-4)."""
    img = np.moveaxis(np.asarray(image, np.float32), slice_axis, 0)
    lab = np.moveaxis(labels, slice_axis, 0)
    myo = ndimage.binary_erosion(lab == 2)
    pools = ndimage.binary_erosion(np.isin(lab, (1, 3)))
    if myo.sum() < 20 or pools.sum() < 20:
        return np.zeros(0)
    m, b = float(np.median(img[myo])), float(np.median(img[pools]))
    edge_level, dark_level = (m + b) / 2, m / 2
    rows = np.flatnonzero((lab == 3).any(axis=(1, 2)))
    t = np.arange(RAY_START, RAY_REACH, RAY_STEP)
    runs = []
    for k in rows[int(0.2 * len(rows)): max(int(np.ceil(0.8 * len(rows))), int(0.2 * len(rows)) + 1)]:
        rv, lv = lab[k] == 3, np.isin(lab[k], (1, 2))
        d_rv = ndimage.distance_transform_edt(~rv, sampling=spacing) \
            - ndimage.distance_transform_edt(rv, sampling=spacing)
        free = rv & ndimage.binary_dilation(np.isin(lab[k], (0, 4))) \
            & (ndimage.distance_transform_edt(~lv, sampling=spacing) > FREE_WALL_MM)
        ys, xs = np.nonzero(free)
        if not len(ys):
            continue
        gy, gx = np.gradient(d_rv, *spacing)
        g = np.stack([gy[ys, xs], gx[ys, xs]], 1)
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
        py = ys[:, None] + g[:, :1] * t / spacing[0]
        px = xs[:, None] + g[:, 1:] * t / spacing[1]
        profiles = ndimage.map_coordinates(img[k], [py.ravel(), px.ravel()], order=1,
                                           mode="nearest").reshape(py.shape)
        for p in profiles:
            inside = np.flatnonzero(p < edge_level)
            if not len(inside) or t[inside[0]] > 3.0:
                continue
            rest = p[inside[0]:]
            out = np.flatnonzero((rest > edge_level) | (rest < dark_level))
            if len(out):
                runs.append(out[0] * RAY_STEP)
    return np.asarray(runs)


def _line(name: str, runs: np.ndarray, truth: str = "") -> str:
    if not len(runs):
        return f"{name}: no rays"
    q1, q2, q3 = np.percentile(runs, [25, 50, 75])
    return f"{name}: median {q2:.2f} mm (quartiles {q1:.2f}-{q3:.2f}), {len(runs)} rays{truth}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="*", type=Path, help="short-axis volumes to segment")
    ap.add_argument("--phantoms", type=int, default=0, help="also this many synthetic scans")
    args = ap.parse_args()
    from bvmesh import io, segment

    for path in args.images:
        r = segment(path)
        axis = r.report["slices"]["slice_axis"]
        spacing = tuple(float(s) for i, s in enumerate(r.volume.spacing) if i != axis)
        print(_line(path.name, wall_runs(r.volume.data, r.labels, spacing, axis)), flush=True)
    if args.phantoms:
        sys.path.insert(0, str(Path(__file__).parent))
        import mesh_phantom_scans as phantoms

        for seed in range(args.phantoms):
            scan = phantoms.make_scan(seed)
            r = segment(io.Volume(scan.image, scan.affine, f"phantom-{seed}"),
                        base_slice=scan.base_slice, slice_axis=2)
            spacing = tuple(float(s) for s in r.volume.spacing[:2])
            print(_line(f"phantom {seed}", wall_runs(scan.image, r.labels, spacing, 2),
                        f"; true wall {scan.params['rv_wall_mm']:g} mm"), flush=True)


if __name__ == "__main__":
    main()
