"""Mesh every ACDC volume the way bvmesh does and record the quality gate, one JSON line
per case (resumable: cases already in the output are skipped).

    python scripts/mesh_acdc_check.py ACDC/training --mode gt -o gt.jsonl
    python scripts/mesh_acdc_check.py ACDC/training --mode segment -o segment.jsonl
    python scripts/mesh_gate_table.py gt.jsonl

``gt``: every *_gt.nii.gz label file through `bvmesh mesh FILE --labels acdc` (the
command's own function, writing into a scratch folder). ``segment``: every frame image
through `bvmesh.segment` with the bundled model and the mesh `bvmesh segment` writes
(bvmesh.outputs.mesh_of).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def gt_mesh(path: Path, scratch: Path) -> dict:
    """`bvmesh mesh FILE --labels acdc` itself (its report: quality and notes)."""
    from bvmesh.mesh.labelmap import mesh_file

    return mesh_file(path, scratch / "mesh.vtp", label_map="acdc")


def segment_mesh(path: Path, model) -> dict:
    """The mesh `bvmesh segment` writes (bvmesh.outputs.mesh_of) of the bundled model's
    segmentation: its quality and notes."""
    from bvmesh import segment
    from bvmesh.outputs import mesh_of

    surf = mesh_of(segment(path, model=model))[0]
    return {"quality": surf.quality, "notes": list(surf.notes)}


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
    with args.output.open("a", encoding="utf-8") as fh, tempfile.TemporaryDirectory() as tmp:
        for path in files:
            case = path.name.removesuffix(".nii.gz")
            if case in done:
                continue
            t0 = time.perf_counter()
            mesh = gt_mesh(path, Path(tmp)) if args.mode == "gt" else segment_mesh(path, model)
            quality = mesh["quality"]
            fh.write(json.dumps({"case": case, "quality": quality, "notes": mesh["notes"],
                                 "seconds": round(time.perf_counter() - t0, 2)}) + "\n")
            fh.flush()
            print(case, "passed" if quality["passed"] else quality["failed"], flush=True)


if __name__ == "__main__":
    main()
