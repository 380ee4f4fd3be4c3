"""How faithful `bvmesh segment`'s mesh is to the manual labels, on held-out ACDC volumes.

    python scripts/mesh_acdc_accuracy.py ACDC/training --weights runs/fold0/model.pt -o fold0.jsonl
    python scripts/mesh_acdc_accuracy.py --table fold0.jsonl [fold1.jsonl ...]   # pooled

Each volume a cross-validation model never saw (its record's held-out subjects, ED and
ES) is segmented with the manual labels' base slice given (the most basal slice with LV
myocardium), then meshed exactly as `bvmesh segment` meshes it (bvmesh.outputs.mesh_of).
One JSON line per volume:

- ``p95_mm`` / ``median_mm``: distance from the manual LV-myocardium surface to the mesh.
  The manual surface is what the annotator drew, each slice standing for its slab: the
  in-plane boundary of the LV myocardium at every labelled slice's centre plane, plus the
  basal face of the most basal slice and, where the labels close the apex (no LV pool
  on the most apical slice), the apical face of that slice (pixel centres moved half a
  slice outward; an open last slice's face is where the annotation stopped, not a
  surface). Mesh side: its faces sampled every ~0.3 mm.
- ``p95_own_mm``: the same distance from the prediction's own LV-myocardium surface (built
  from its label map the way the manual one is): what the mesh stage adds to the
  segmentation's error.
- ``far_base`` / ``far_apex``: of the manual points farther than 2.5 mm, the share in the
  basal / apical third of the heart (where the error sits).
- ``volume_error``: meshed myocardium (apex cap not counted) against the predicted label
  map's myocardium (labels 2 and 4 on the input grid), relative.
- ``apex``: what closing the apex added (mm, ml), or null.

Works with the mesh stage before the slab change too (``mesh_of`` then returned the
surface and a voxel count), so the same command measures before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from heldout import manual_base


def manual_surface(gt_myo: np.ndarray, gt_pool: np.ndarray, affine: np.ndarray, axis: int,
                   base: int) -> tuple[np.ndarray, np.ndarray]:
    """World points (mm) of the manual LV-myocardium surface and their height fraction
    (0 at the base slice's centre, 1 at the most apical labelled slice's)."""
    myo = np.moveaxis(gt_myo, axis, 0)
    pool = np.moveaxis(gt_pool, axis, 0)
    slices = np.flatnonzero(myo.any(axis=(1, 2)))
    pts = []
    for k in slices:
        m = myo[k]
        for d in (0, 1):  # pixel edges between myocardium and not, in-plane
            a = np.pad(m, [(1, 1) if i == d else (0, 0) for i in (0, 1)])
            diff = np.diff(a.astype(np.int8), axis=d) != 0
            idx = np.argwhere(diff).astype(float)
            idx[:, d] -= 0.5
            pts.append(np.c_[np.full(len(idx), k, float), idx])
    apex = slices[-1] if base == slices[0] else slices[0]
    sign = 1 if apex > base else -1
    faces = [(base, -0.5 * sign)] + ([] if pool[apex].any() else [(apex, 0.5 * sign)])
    for k, off in faces:
        idx = np.argwhere(myo[k]).astype(float)
        pts.append(np.c_[np.full(len(idx), k + off), idx])
    p = np.concatenate(pts)
    order = [axis] + [a for a in range(3) if a != axis]
    ijk = np.zeros_like(p)
    ijk[:, order] = p
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return world, (p[:, 0] - base) / (apex - base if apex != base else 1)


def surface_samples(verts: np.ndarray, faces: np.ndarray, step: float = 0.3) -> np.ndarray:
    """Points on every face, about ``step`` mm apart (vertices, edge points, interiors)."""
    tri = verts[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
    n = np.clip(np.ceil(area / (step * step)), 1, 200).astype(int)
    rng = np.random.default_rng(0)
    which = np.repeat(np.arange(len(faces)), n)
    u, v = rng.random((2, len(which)))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[which]
    return np.concatenate([verts, t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0])
                           + v[:, None] * (t[:, 2] - t[:, 0])])


def measure(image: Path, gt_path: Path, model) -> dict:
    from scipy.spatial import cKDTree

    from bvmesh import io, segment
    from bvmesh.labels import LV_MYO, LV_POOL, parse_label_map, to_bvmesh
    from bvmesh.outputs import mesh_of

    gt = io.load(gt_path)
    gt_labels = to_bvmesh(np.rint(gt.data).astype(int), parse_label_map("acdc"))
    axis = int(np.argmax(gt.spacing))
    gt_myo = gt_labels == LV_MYO
    # ACDC's base: the end of the labelled slices where the sections are wider (comparing
    # the two end slices alone put it at the apex of patient090 ES and 093 ED).
    base, _ = manual_base(np.moveaxis(gt_labels, axis, -1))
    result = segment(image, model=model, base_slice=base)
    made = mesh_of(result)
    surf = made[0]
    cap = getattr(made[1], "apex", None)
    pts, frac = manual_surface(gt_myo, gt_labels == LV_POOL, gt.affine, axis, base)
    tree = cKDTree(surface_samples(surf.vertices, surf.faces))
    d, _ = tree.query(pts)
    own, _ = manual_surface(result.labels == LV_MYO, result.labels == LV_POOL, gt.affine, axis, base)
    d_own, _ = tree.query(own)
    voxel_ml = abs(np.linalg.det(result.volume.affine[:3, :3])) / 1000
    label_ml = float(np.isin(result.labels, (2, 4)).sum() * voxel_ml)
    from bvmesh.mesh.surface import signed_volume

    mesh_ml = signed_volume(surf.vertices, surf.faces) / 1000 - (cap.myocardium_ml if cap else 0.0)
    far = d > 2.5
    return {"p95_mm": round(float(np.percentile(d, 95)), 2), "median_mm": round(float(np.median(d)), 2),
            "p95_own_mm": round(float(np.percentile(d_own, 95)), 2),
            "far_base": round(float((far & (frac < 1 / 3)).sum() / max(far.sum(), 1)), 2),
            "far_apex": round(float((far & (frac > 2 / 3)).sum() / max(far.sum(), 1)), 2),
            "volume_error": round(mesh_ml / label_ml - 1, 4), "mesh_ml": round(mesh_ml, 2),
            "label_ml": round(label_ml, 2), "faces": int(len(surf.faces)),
            "gate": bool(surf.quality["passed"]), "apex": cap.as_dict() if cap else None,
            "base_slice": base}


def table(paths: list[Path]) -> None:
    rows = [json.loads(line) for path in paths
            for line in path.read_text(encoding="utf-8").splitlines()]
    p95 = np.array([r["p95_mm"] for r in rows])
    vol = np.abs([r["volume_error"] for r in rows])
    capped = [r for r in rows if r["apex"] and r["apex"]["mode"] == "extrapolate"]
    print(f"volumes: {len(rows)}; gate passed: {sum(r['gate'] for r in rows)}")
    print(f"p95 manual LV-myocardium surface -> mesh, mm: median {np.median(p95):.2f}, "
          f"IQR {np.percentile(p95, 25):.2f}-{np.percentile(p95, 75):.2f}, worst {p95.max():.2f}; "
          f"at or under 2.5 mm: {(p95 <= 2.5).sum()}/{len(rows)}")
    print(f"median distance, mm: median {np.median([r['median_mm'] for r in rows]):.2f}")
    own = [r["p95_own_mm"] for r in rows if "p95_own_mm" in r]
    if own:
        print(f"p95 own label surface -> mesh, mm: median {np.median(own):.2f}, worst {max(own):.2f}")
    print(f"far points (> 2.5 mm) in the basal third: {np.mean([r['far_base'] for r in rows]):.0%}, "
          f"apical third: {np.mean([r['far_apex'] for r in rows]):.0%} (means)")
    print(f"|mesh - label| myocardium volume: median {np.median(vol):.1%}, worst {vol.max():.1%}, "
          f"within 3 %: {(vol <= 0.03).sum()}/{len(rows)}")
    over = sorted((r for r in rows if abs(r["volume_error"]) > 0.03), key=lambda r: -abs(r["volume_error"]))
    if over:
        print("  over 3 %: " + ", ".join(f"{r['case']} {r['volume_error']:+.1%}" for r in over))
    heights = [r["apex"]["height_mm"] for r in capped if r["apex"]["height_mm"] > 0]
    print(f"apex caps extrapolated: {len(capped)}"
          + (f", {len(heights)} with a height: median {np.median(heights):.1f} mm, "
             f"tallest {max(heights):.1f}" if heights else ""))
    for r in capped:
        print(f"  {r['case']}: {r['apex']['height_mm']} mm, {r['apex']['myocardium_ml']} ml myocardium")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, nargs="?", help="ACDC training folder")
    ap.add_argument("--weights", help="a cross-validation model (bvmesh train --fold K)")
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--table", type=Path, nargs="+",
                    help="print the summary of results files (pooled) and stop")
    args = ap.parse_args()
    if args.table:
        return table(args.table)
    if not (args.data and args.weights and args.output):
        sys.exit("give DATA, --weights and -o (or --table FILE...)")
    from bvmesh.pipeline import load_weights

    model, _ = load_weights(args.weights)
    subjects = model.record.get("held_out_subjects") or sys.exit(f"{args.weights}: no held-out subjects")
    done = set()
    if args.output.exists():
        done = {json.loads(line)["case"] for line in args.output.read_text().splitlines()}
    with args.output.open("a", encoding="utf-8") as fh:
        for subject in subjects:
            for gt in sorted((args.data / subject).glob(f"{subject}_frame??_gt.nii.gz")):
                case = gt.name.removesuffix("_gt.nii.gz")
                if case in done:
                    continue
                t0 = time.perf_counter()
                row = {"case": case, **measure(gt.with_name(f"{case}.nii.gz"), gt, model),
                       "seconds": round(time.perf_counter() - t0, 1)}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(case, row["p95_mm"], row["volume_error"], row["apex"], flush=True)


if __name__ == "__main__":
    main()
