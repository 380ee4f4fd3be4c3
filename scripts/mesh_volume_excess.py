"""Where a mesh holds more myocardium than its label map: the topology repair's wrap, or the
stack against its resampling onto the input grid?

    python scripts/mesh_volume_excess.py ACDC/training --weights runs/fold0-vendor/model.pt \
        patient087_frame01 patient093_frame01 patient090_frame11

Each named volume is segmented with its manual base slice and meshed as `bvmesh segment`
meshes it, at marching cubes' density, twice: with the stack smoothed along its axis as
usual (bvmesh.mesh.slabs.TERRACE_SIGMA) and without. Prints the meshed myocardium against
the label map's (labels 2 + 4 on the input grid, the apex closure not counted) and the
myocardium the repair's wrap added (from the mesh notes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import bvmesh
    import bvmesh.mesh.slabs as slabs
    from bvmesh.outputs import MeshOptions, mesh_of
    from bvmesh.pipeline import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("cases", nargs="+", help="names like patient087_frame01")
    ap.add_argument("--weights", required=True)
    args = ap.parse_args()
    model = load_model(args.weights, "cpu")
    usual = slabs.TERRACE_SIGMA
    print("| case | axial smoothing | mesh vs labels | wrap ml |\n|---|---|---|---|")
    for case in args.cases:
        stem = args.data / case.split("_")[0] / case
        gt = bvmesh.io.load(f"{stem}_gt.nii.gz").data
        base = int(np.flatnonzero((gt == 2).any(axis=(0, 1)))[0])  # ACDC: base first
        result = bvmesh.segment(f"{stem}.nii.gz", model=model, base_slice=base)
        voxel_ml = float(np.prod(result.volume.spacing)) / 1000
        label_ml = np.isin(result.labels, (2, 4)).sum() * voxel_ml
        for sigma in (usual, 0.0):
            slabs.TERRACE_SIGMA = sigma
            surf, vol = mesh_of(result, MeshOptions(edge_mm=0))
            closure = vol.apex.myocardium_ml if vol.apex else 0.0
            wrap = next(n for n in surf.notes if "pools wrapped" in n)
            wrap_ml = wrap.split("pools wrapped ")[1].split(" ml")[0]
            print(f"| {case} | {'on' if sigma else 'off'} | "
                  f"{100 * ((surf.volume_ml - closure) / label_ml - 1):+.1f} % | {wrap_ml} |")
        slabs.TERRACE_SIGMA = usual


if __name__ == "__main__":
    main()
