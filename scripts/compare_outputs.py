"""Are two `bvmesh segment` output folders the same? Labels voxel for voxel, meshes vertex
for vertex and face for face, and the report's measurements.

    # the same cases, before and after a change (an old commit in a worktree):
    git worktree add /tmp/old COMMIT
    PYTHONPATH=/tmp/old python -m bvmesh segment CASES... -o before --base-slices bases.csv
    python -m bvmesh segment CASES... -o after --base-slices bases.csv
    python scripts/compare_outputs.py before after

Prints one line per case and exits 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def compare_case(a: Path, b: Path) -> list[str]:
    """What differs between two case folders (empty: nothing)."""
    diffs = []
    la, lb = (nib.load(str(f / "labels.nii.gz")) for f in (a, b))
    if not np.array_equal(np.asarray(la.dataobj), np.asarray(lb.dataobj)):
        diffs.append(f"labels: {int(np.sum(np.asarray(la.dataobj) != np.asarray(lb.dataobj)))} voxels")
    if not np.array_equal(la.affine, lb.affine):
        diffs.append("labels affine")
    if (a / "mesh.vtp").exists() or (b / "mesh.vtp").exists():
        diffs += _mesh_diffs(a / "mesh.stl", b / "mesh.stl")
    ma, mb = (json.loads((f / "report.json").read_text())["measurements"] for f in (a, b))
    diffs += [f"{k}: {ma[k]} vs {mb.get(k)}" for k in ma if ma[k] != mb.get(k)]
    return diffs


def _mesh_diffs(a: Path, b: Path) -> list[str]:
    import trimesh

    if not (a.exists() and b.exists()):
        return ["mesh missing on one side"]
    ma, mb = (trimesh.load(str(p), process=False) for p in (a, b))
    if ma.faces.shape != mb.faces.shape:
        return [f"mesh: {len(ma.faces)} vs {len(mb.faces)} faces"]
    if not np.array_equal(ma.faces, mb.faces) or not np.array_equal(ma.vertices, mb.vertices):
        return [f"mesh: same size, vertices differ by up to "
                f"{float(np.abs(ma.vertices - mb.vertices).max()):.2e} mm"]
    return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args()
    cases = sorted(p.name for p in args.before.iterdir() if (p / "report.json").exists())
    if not cases:
        print(f"{args.before}: no case folders", file=sys.stderr)
        return 1
    differ = 0
    for case in cases:
        diffs = compare_case(args.before / case, args.after / case)
        differ += bool(diffs)
        print(f"{case}\t{'identical' if not diffs else '; '.join(diffs)}")
    print(f"{len(cases) - differ} of {len(cases)} cases identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
