"""Mesh stage timings on phantoms and a real prediction (median of repeats; not a test).

    OMP_NUM_THREADS=1 python benchmarks/bench_mesh.py [--repeats 5] [--no-tetra]

Cases: surface from an isotropic 1.25 mm label map (the `segment` prediction's grid),
surface of a real prediction (the shipped example scan segmented by the bundled model,
as `bvmesh segment` meshes it), surface from an 8 mm thick-slice label map (upsampled +
repaired), tetra mesh at 1.5 mm edges (needs gmsh). Prints a markdown table for
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import timed  # noqa: E402

from bvmesh import segment  # noqa: E402
from bvmesh.examples import EXAMPLE  # noqa: E402
from bvmesh.mesh import surface_mesh, tetra_mesh  # noqa: E402
from bvmesh.outputs import MeshOptions, mesh_of  # noqa: E402
from bvmesh.testing import make_phantom


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-tetra", action="store_true")
    args = ap.parse_args()
    rows = []
    iso = make_phantom((1.25, 1.25, 1.25), truth=False)
    thick = make_phantom((1.5, 1.5, 8.0), truth=False)
    t, s = timed(lambda: surface_mesh(iso.labels, iso.affine), args.repeats)
    rows.append(("surface, isotropic 1.25 mm " + "x".join(map(str, iso.labels.shape)), t,
                 f"{len(s.faces)} faces, gate {'passed' if s.quality['passed'] else 'FAILED'}"))
    real = segment(EXAMPLE)
    for options, what in ((MeshOptions(edge_mm=None), "marching cubes' density"),
                          (MeshOptions(), "remeshed to 1.5 mm")):
        t, (s, _) = timed(lambda options=options: mesh_of(real, options), args.repeats)
        rows.append((f"surface, real prediction (example scan) {'x'.join(map(str, real.stack_labels.shape))}"
                     f", {what}", t,
                     f"{len(s.faces)} faces, gate {'passed' if s.quality['passed'] else 'FAILED'}"))
    t, s = timed(lambda: surface_mesh(thick.labels, thick.affine), args.repeats)
    rows.append(("surface, 8 mm slices " + "x".join(map(str, thick.labels.shape)), t,
                 f"{len(s.faces)} faces, gate {'passed' if s.quality['passed'] else 'FAILED'}"))
    raw = surface_mesh(thick.labels, thick.affine, repair_topology=False)
    rows.append(("  (8 mm, without topology repair)", float("nan"),
                 f"genus {raw.quality['euler_characteristic']['genus']:g}; with repair "
                 f"{s.quality['euler_characteristic']['genus']:g}"))
    if not args.no_tetra:
        surfaces = [("8 mm surface", s), ("isotropic surface", surface_mesh(iso.labels, iso.affine)),
                    ("real prediction's surface", mesh_of(real)[0])]
        for name, surf in surfaces:
            t, m = timed(lambda surf=surf: tetra_mesh(surf, edge_mm=1.5), max(1, args.repeats // 2))
            rows.append((f"tetra, 1.5 mm edges, from the {name}", t,
                         f"{m.quality['tetra']['elements']} tets, min dihedral "
                         f"{m.quality['min_dihedral_deg']['value']:.1f} deg, gate "
                         f"{'passed' if m.quality['passed'] else 'FAILED'}"))
    print("| case | median s | result |\n|---|---|---|")
    for name, t, what in rows:
        print(f"| {name} | {'' if t != t else f'{t:.2f}'} | {what} |")


if __name__ == "__main__":
    main()
