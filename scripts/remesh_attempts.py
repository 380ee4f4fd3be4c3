"""How often the remeshed surface passes the quality gate at the first edge tried, by
remeshing passes: what bvmesh.mesh.remesh.ITERATIONS and bvmesh.mesh.build.ATTEMPTS are
set from.

    # every fourth subject, ED and ES (the 50 volumes of docs/meshes.md)
    python scripts/remesh_attempts.py $(for i in $(seq 1 4 100); do printf \
        "ACDC/training/patient%03d/patient%03d_frame??.nii.gz " $i $i; done) -o a.jsonl
    python scripts/remesh_attempts.py --table a.jsonl

Each scan is segmented and meshed as ``bvmesh segment`` does (bundled weights unless
``--weights``); the smoothed surface the remesher is first given is then remeshed with 2
and with 3 passes at the edge asked for (1.5 mm) and at 0.95 and 0.9 of it, each result
relaxed and gated as bvmesh.mesh.build does. Per scan and setting: gate passed, what
failed, seconds, faces. The table: per number of passes, how many passed at each edge and
within the first one, two and three edges; then how many passed within the first one, two
and three of bvmesh.mesh.build.ATTEMPTS, the sequence bvmesh tries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

PASSES = (2, 3)
EDGE_MM = 1.5
FRACTIONS = (1.0, 0.95, 0.9)


def measure(paths: list[Path], weights: str | None, out: Path) -> None:
    from gpytoolbox_bindings import _remesh_botsch_cpp_impl

    from bvmesh.cases import Segmenter
    from bvmesh.mesh import remesh, surface
    from bvmesh.mesh.quality import quality_report
    from bvmesh.outputs import mesh_of

    first: dict = {}
    real = remesh.remesh

    def spy(verts, faces, base_faces, edge_mm, iterations=remesh.ITERATIONS):
        first.setdefault("input", (verts, faces, base_faces))  # the remesher's first input
        return real(verts, faces, base_faces, edge_mm, iterations)

    remesh.remesh = spy
    segment = Segmenter(weights=weights)
    with out.open("w") as fh:
        for path in paths:
            first.clear()
            surf, _ = mesh_of(segment(path))
            verts, faces, base_faces = first["input"]
            rim = remesh.rim_edges(faces, base_faces).astype(np.int32)
            point, normal = surf.base_plane
            for passes in PASSES:
                for fraction in FRACTIONS:
                    edge = round(fraction * EDGE_MM, 3)
                    t = time.perf_counter()  # the binding alone: remesh.remesh's own checks aside
                    u, g = _remesh_botsch_cpp_impl(verts, faces.astype(np.int32), passes, edge,
                                                   np.zeros(0, np.int32), rim, True)
                    seconds = time.perf_counter() - t
                    u, g = np.asarray(u, float), np.asarray(g, np.int64)
                    on_plane = np.abs((u - point) @ normal) < 1e-6
                    u = surface.relax(u, g, on_plane=on_plane, point=point, normal=normal,
                                      iterations=2)
                    quality = quality_report(u, g)
                    fh.write(json.dumps({"case": path.name, "passes": passes, "edge_mm": edge,
                                         "passed": quality["passed"], "failed": quality["failed"],
                                         "seconds": round(seconds, 3), "faces": len(g)}) + "\n")
                    fh.flush()


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cases = sorted({r["case"] for r in rows})
    print(f"{len(cases)} scans, {EDGE_MM:g} mm asked for")
    print("| passes | passed at 1.0 / 0.95 / 0.9 of the edge | within the first one / two / "
          "three | median s a remesh |")
    print("|---|---|---|---|")
    for passes in PASSES:
        by = {(r["case"], r["edge_mm"]): r for r in rows if r["passes"] == passes}
        edges = [round(f * EDGE_MM, 3) for f in FRACTIONS]
        each = [sum(by[c, e]["passed"] for c in cases) for e in edges]
        within = [sum(any(by[c, e]["passed"] for e in edges[:k]) for c in cases)
                  for k in (1, 2, 3)]
        seconds = statistics.median(r["seconds"] for r in by.values())
        print(f"| {passes} | {' / '.join(map(str, each))} | {' / '.join(map(str, within))} | "
              f"{seconds:.2f} |")
    from bvmesh.mesh.build import ATTEMPTS

    by = {(r["case"], r["passes"], r["edge_mm"]): r["passed"] for r in rows}
    tries = [(passes, round(f * EDGE_MM, 3)) for passes, f in ATTEMPTS]
    within = [sum(any(by[c, p, e] for p, e in tries[:k]) for c in cases) for k in (1, 2, 3)]
    print(f"\nbvmesh's attempts {tries} (passes, mm): passed within the first one / two / "
          f"three: {' / '.join(map(str, within))} of {len(cases)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scans", type=Path, nargs="*")
    ap.add_argument("--weights")
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--table", type=Path)
    args = ap.parse_args()
    if args.table:
        table(args.table)
    else:
        measure(args.scans, args.weights, args.output)


if __name__ == "__main__":
    main()
