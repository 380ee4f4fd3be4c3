"""What the network draws between slice centres: its myocardium against the centres'.

    python scripts/stack_between_slices.py ACDC/training --weights runs/fold0-vendor/model.pt

Each volume the cross-validation model never saw (ED and ES) is segmented with its manual
base slice. On the isotropic stack, the myocardium's area (labels 2 + 4) on every stack
slice is compared with the linear interpolation between the two slice centres around it;
printed per position within the slab (0: at a centre, 0.5: mid-way), as the mean excess
in cm2 and relative to the interpolation. Between centres the network reads linearly
blended images; the label map on the input grid sees only the centres, and since the
mesh is made from the centres' sections (bvmesh.mesh.slabs), this is what it no longer
holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from heldout import manual_base


def excess_by_phase(stack_labels: np.ndarray, spacing_mm: float, slab_mm: float, bins: int):
    """Per stack slice: its slab phase bin, myocardium area and the centres' interpolation (cm2)."""
    area = np.isin(stack_labels, (2, 4)).sum(axis=(1, 2)) * spacing_mm ** 2 / 100
    pos = np.arange(len(area)) * spacing_mm / slab_mm  # in slices from the base slice's centre
    centres = np.arange(0, pos[-1] + 1e-6)
    line = np.interp(pos, centres, np.interp(centres, pos, area))
    phase = np.rint((pos % 1) * bins).astype(int) % bins
    return phase, area, line


def main() -> None:
    import bvmesh
    from bvmesh.pipeline import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="ACDC training folder")
    ap.add_argument("--weights", required=True, help="a cross-validation model")
    ap.add_argument("--bins", type=int, default=8, help="positions per slab (8: 1.25 mm on 10 mm)")
    args = ap.parse_args()
    model = load_model(args.weights, "cpu")
    rows = []
    for subject in model.record["held_out_subjects"]:
        for gt_path in sorted((args.data / subject).glob(f"{subject}_frame??_gt.nii.gz")):
            base, _ = manual_base(bvmesh.io.load(gt_path).data)
            result = bvmesh.segment(str(gt_path).replace("_gt", ""), model=model, base_slice=base)
            rows.append(excess_by_phase(result.stack_labels, result.grid.spacing_mm,
                                        float(result.volume.spacing[2]), args.bins))
    phase, area, line = (np.concatenate(c) for c in zip(*rows))
    print(f"{len(rows)} held-out volumes; myocardium area on the stack against the linear "
          "interpolation of the slice centres\n")
    print("| position in the slab | mean excess cm2 | relative |\n|---|---|---|")
    for b in range(args.bins):
        sel = (phase == b) & (line > 0)
        print(f"| {b / args.bins:.3f} | {np.mean(area[sel] - line[sel]):+.2f} | "
              f"{np.sum(area[sel] - line[sel]) / np.sum(line[sel]):+.1%} |")


if __name__ == "__main__":
    main()
