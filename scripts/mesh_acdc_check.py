"""Mesh every ACDC volume the way bvmesh does and record the quality gate, one JSON line
per case (resumable: cases already in the output are skipped).

    python scripts/mesh_acdc_check.py ACDC/training --mode gt -o gt.jsonl
    python scripts/mesh_acdc_check.py ACDC/training --mode segment -o segment.jsonl
    python scripts/mesh_gate_table.py gt.jsonl

``gt``: every *_gt.nii.gz label file through the same steps as
`bvmesh mesh FILE --labels acdc` (read, translate labels, surface_mesh with the base
derived from the labels). ``segment``: every frame image through `bvmesh.segment` with
the bundled model and the mesh `bvmesh segment` writes (bvmesh.outputs.mesh_of).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def gt_mesh(path: Path):
    from bvmesh import io
    from bvmesh.labels import parse_label_map, to_bvmesh
    from bvmesh.mesh import surface_mesh

    volume = io.load(path)
    labels = to_bvmesh(np.asarray(volume.data).astype(int), parse_label_map("acdc"),
                       source=str(path))
    return surface_mesh(labels, volume.affine)


def segment_mesh(path: Path, model):
    from bvmesh import segment
    from bvmesh.outputs import mesh_of

    return mesh_of(segment(path, model=model))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="ACDC training folder (patientNNN/ subfolders)")
    ap.add_argument("--mode", choices=("gt", "segment"), required=True)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    pattern = "patient*/patient*_frame??_gt.nii.gz" if args.mode == "gt" \
        else "patient*/patient*_frame??.nii.gz"
    files = sorted(args.data.glob(pattern))
    if not files:
        sys.exit(f"no {pattern} under {args.data}")
    done = set()
    if args.output.exists():
        done = {json.loads(line)["case"] for line in args.output.read_text().splitlines()}
    model = None
    if args.mode == "segment":
        from bvmesh.pipeline import load_weights

        model, _ = load_weights(None)
    with args.output.open("a", encoding="utf-8") as fh:
        for path in files:
            case = path.name.removesuffix(".nii.gz")
            if case in done:
                continue
            t0 = time.perf_counter()
            surf = gt_mesh(path) if args.mode == "gt" else segment_mesh(path, model)
            fh.write(json.dumps({"case": case, "quality": surf.quality, "notes": list(surf.notes),
                                 "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
            fh.flush()
            print(case, "passed" if surf.quality["passed"] else surf.quality["failed"], flush=True)


if __name__ == "__main__":
    main()
