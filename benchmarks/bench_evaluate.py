"""Cost of scoring one case: `bvmesh.evaluate.score_case` and reading the two label maps.

    PYTHONPATH=. python benchmarks/bench_evaluate.py [--repeats 7] [--gt FILE_gt.nii.gz --labels acdc]

Without --gt it scores a synthetic ACDC-sized case (216 x 256 x 10 voxels of
1.5625 x 1.5625 x 10 mm, a tapering biventricular heart) against a copy shifted by one
voxel. With --gt it scores that label map against a copy shifted by one voxel and
eroded in-plane (a realistic imperfect prediction). Prints medians over repeats, with
and without the isotropic Dice. Nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_time  # noqa: E402

from bvmesh import evaluate as ev  # noqa: E402
from bvmesh.labels import parse_label_map  # noqa: E402


def synthetic(shape=(216, 256, 10), spacing=(1.5625, 1.5625, 10.0)):
    i, j = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1],
                       indexing="ij")
    lab = np.zeros(shape, np.uint8)
    for t, k in enumerate(range(1, 9)):
        r = np.sqrt(max(1 - (t / 9) ** 2, 0.05))
        d_lv, d_rv = np.hypot(i - 170, j - 200), np.hypot(i - 170 - 25 * r, j - 200)
        lv_epi = d_lv < 30 * r
        rv_pool = (d_rv < 32 * r) & ~lv_epi
        sl = lab[:, :, k]
        sl[(d_rv < 32 * r + 3) & ~lv_epi & ~rv_pool] = 4
        sl[rv_pool] = 3
        sl[lv_epi] = 2
        sl[d_lv < 20 * r] = 1
    return lab, np.diag([*spacing, 1.0])


def degrade(lab: np.ndarray) -> np.ndarray:
    out = np.zeros_like(lab)
    for value in np.unique(lab)[1:]:
        m = ndi.binary_erosion(np.roll(lab == value, 1, axis=0), np.ones((3, 3, 1), bool))
        out[m & (out == 0)] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--gt", type=Path, help="a ground-truth label map to score")
    parser.add_argument("--labels", default="bvmesh", help="its label map (acdc, ...)")
    args = parser.parse_args()
    if args.gt:
        gt, affine = ev.load_labels(args.gt, parse_label_map(args.labels))
        pred = degrade(gt)
        source = str(args.gt)
    else:
        gt, affine = synthetic()
        pred = np.roll(gt, 1, axis=0)
        source = "synthetic"
    structures = tuple(s for s in ev.STRUCTURES if np.isin(gt, ev.STRUCTURES[s]).any())
    spacing = np.round(np.linalg.norm(affine[:3, :3], axis=0), 4).tolist()
    print(f"case: {source}, grid {gt.shape}, spacing {spacing} mm, structures {structures}")
    for iso in (1.25, None):
        t = median_time(lambda iso=iso: ev.score_case(pred, gt, affine, structures=structures,
                                                      isotropic_mm=iso), args.repeats)
        print(f"score_case, isotropic {'1.25 mm' if iso else 'off'}: {t * 1000:.0f} ms "
              f"(median of {args.repeats})")
    with tempfile.TemporaryDirectory() as tmp:
        import nibabel as nib

        path = Path(tmp) / "p.nii.gz"
        nib.save(nib.Nifti1Image(pred, affine), str(path))
        t = median_time(lambda: ev.load_labels(path, parse_label_map("bvmesh")), args.repeats)
        print(f"load_labels (one .nii.gz): {t * 1000:.0f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
