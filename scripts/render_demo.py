"""Pictures of `bvmesh segment` on one scan, for the README and for looking at the result.

    python scripts/render_demo.py [INPUT] --out docs/img [--weights W]

Writes demo_qc.png (the qc montage), demo_mesh.png (the tagged mesh) and
demo_overlay.png: the mesh cut by the planes of three input slices, drawn in the
slices' voxel coordinates over the image. The cut uses only world coordinates (mesh
vertices in mm, the slice plane from the input affine), so a contour that sits on the
myocardium shows that the mesh overlays its image in world space.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np


def overlay(result, surf, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import trimesh

    vol = result.volume
    geo = result.report["slices"]
    axis, base = geo["slice_axis"], geo["base_slice"]
    sign = 1 if geo["apex_direction"].startswith("increasing") else -1
    apex = geo["apex_slice_estimate"]
    picks = [base + sign, (base + apex) // 2, apex - sign]
    mesh = trimesh.Trimesh(surf.vertices, surf.faces, process=False)
    inv = np.linalg.inv(vol.affine)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), layout="constrained")
    for ax, k in zip(axes, picks):
        index = np.zeros(3)
        index[axis] = k
        origin = (vol.affine @ np.append(index, 1))[:3]
        a, b = [vol.affine[:3, i] for i in range(3) if i != axis]
        normal = np.cross(a, b)
        section = mesh.section(plane_origin=origin, plane_normal=normal / np.linalg.norm(normal))
        image = np.take(vol.data, k, axis=axis)
        ax.imshow(image.T, cmap="gray", origin="lower")
        ax.contour((np.take(result.labels, k, axis=axis) > 0).T, levels=[0.5], colors="cyan",
                   linewidths=0.6, origin="lower")
        if section is not None:
            for line in section.discrete:
                vox = (inv @ np.c_[line, np.ones(len(line))].T)[:3].T
                rows, cols = [vox[:, i] for i in range(3) if i != axis]
                ax.plot(rows, cols, color="yellow", lw=0.9)
        ax.set_title(f"slice {k}: mesh cut (yellow), labels (cyan)", fontsize=9)
        ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    import bvmesh
    from bvmesh.examples import EXAMPLE
    from bvmesh.mesh.render import render_png
    from bvmesh.outputs import mesh_of, write_case

    ap = argparse.ArgumentParser()
    ap.add_argument("input", nargs="?", default=str(EXAMPLE))
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--weights", default=None)
    args = ap.parse_args()
    result = bvmesh.segment(args.input, weights=args.weights, device="cpu")
    surf, _ = mesh_of(result)  # the mesh `bvmesh segment` writes (default MeshOptions)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_case(result, tmp, "case", mesh=None)
        shutil.copy(folder / "qc.png", args.out / "demo_qc.png")
    render_png(surf, args.out / "demo_mesh.png", title=f"{Path(args.input).name}: bvmesh segment "
               f"mesh ({len(surf.faces)} faces, gate {'passed' if surf.quality['passed'] else 'FAILED'})")
    overlay(result, surf, args.out / "demo_overlay.png")
    print(result.report["measurements"], surf.quality["passed"], surf.quality.get("failed"))


if __name__ == "__main__":
    main()
