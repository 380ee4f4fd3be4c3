"""Mesh accuracy on the analytic test phantoms: the numbers docs/meshes.md quotes.

    python scripts/mesh_phantom_accuracy.py [--png docs/img/mesh_tags.png]

For the isotropic 1.25 mm phantom (both det signs) and the oblique 8 mm stack: vertex
distance to the analytic surface (median, p95, mm), the area fraction whose tag matches
the analytic tag, and the base cap's area against the true base ring. ``--png`` also
draws the 8 mm phantom's tagged mesh (the picture at the top of docs/meshes.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bvmesh.mesh import BASE, surface_mesh  # noqa: E402
from bvmesh.testing import make_phantom


def metrics(surf, phantom) -> tuple[float, float, float, float]:
    tree = cKDTree(phantom.truth_points)
    dist, _ = tree.query(surf.vertices)
    _, nearest = tree.query(surf.vertices[surf.faces].mean(axis=1))
    v, f = surf.vertices, surf.faces
    area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1) / 2
    agree = float((area * (phantom.truth_tags[nearest] == surf.face_tags)).sum() / area.sum())
    base = area[surf.face_tags == BASE].sum() / ((phantom.truth_tags == BASE).sum() * 0.25**2)
    return float(np.median(dist)), float(np.percentile(dist, 95)), agree, float(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--png", type=Path, help="write the 8 mm phantom's tagged mesh here")
    args = ap.parse_args()
    cases = [("isotropic 1.25 mm, det > 0", make_phantom((1.25, 1.25, 1.25), det_sign=1)),
             ("isotropic 1.25 mm, det < 0", make_phantom((1.25, 1.25, 1.25), det_sign=-1,
                                                         base_at_start=True)),
             ("8 mm slices, oblique, det < 0", make_phantom((1.5, 1.5, 8.0), det_sign=-1,
                                                            oblique=(-25.0, 10.0, 70.0)))]
    print("| phantom | median mm | p95 mm | tags agree (area) | base cap / true base |")
    print("|---|---|---|---|---|")
    for name, phantom in cases:
        surf = surface_mesh(phantom.labels, phantom.affine)
        med, p95, agree, base = metrics(surf, phantom)
        print(f"| {name} | {med:.2f} | {p95:.2f} | {agree:.1%} | {base:.3f} |")
    if args.png:
        from bvmesh.mesh.render import render_png

        render_png(surf, args.png, title=f"8 mm phantom, oblique, det < 0: {len(surf.faces)} "
                   f"faces, gate {'passed' if surf.quality['passed'] else 'FAILED'}")


if __name__ == "__main__":
    main()
