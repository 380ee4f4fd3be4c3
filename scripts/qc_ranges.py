"""Where some of bvmesh.checks' ranges come from: the checks' values on ACDC's manual labels
(and, for ``apical_end``, on held-out predictions).

    python scripts/qc_ranges.py ACDC/training [--predictions results/fold0-vendor/predictions ...]

For each of the 200 ED/ES frames, with the manual label map (base: the labels' most basal
slice, ACDC stores it first): ``lv_wall_mm`` by phase, ``image_texture`` over every slice of
the image in the heart's box, ``apical_end`` where the labels end before the scan does,
``rv_right`` with the image's affine, ``slice_order`` on the image in its order and in
random orders of its slices. ``--predictions`` folders hold
``<case>/labels.nii.gz`` from `bvmesh evaluate`; their ``apical_end`` is given too, and
``slice_order`` in their heart's box (what `bvmesh segment` reads). Prints
the range of each over the frames and the frames at its ends.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from heldout import held_out_volumes


def _measures(labels: np.ndarray, spacing: np.ndarray) -> dict:
    """bvmesh.checks.measures of a label map with slices along its last axis, its base at
    the end where the heart's sections are wider."""
    from bvmesh.checks import measures

    on = np.flatnonzero(labels.any(axis=(0, 1)))
    sections = (labels > 0).sum(axis=(0, 1))
    base_first = sections[on[0]] >= sections[on[-1]]
    base = int(on[0] if base_first else on[-1])
    return measures(labels, spacing, 2, base, 1 if base_first else -1, {}, 0.0)


def _summary(name: str, values: dict[str, float | None]) -> None:
    got = sorted((v, k) for k, v in values.items() if v is not None)
    if got:
        print(f"{name}: {got[0][0]:.3f} ({got[0][1]}) .. {got[-1][0]:.3f} ({got[-1][1]}), "
              f"{len(got)} of {len(values)} frames")


#: Random orders of each frame's slices for slice_order's figures.
SHUFFLES = 5


def _shares(name: str, ordered: dict, shuffled: dict) -> None:
    """Median of ``ordered`` and ``shuffled`` and the share of ``shuffled`` above the
    largest ordered value."""
    a = np.array([v for v in ordered.values() if v is not None])
    b = np.array([v for v in shuffled.values() if v is not None])
    print(f"{name}: median {np.median(a):.3f} in order, {np.median(b):.3f} shuffled; "
          f"{np.mean(b > a.max()):.1%} of the shuffled above the largest in order")


def main() -> None:
    import nibabel as nib

    from bvmesh.checks import image_texture, rv_right, slice_order
    from bvmesh.labels import LV_MYO, LV_POOL

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--predictions", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    subjects = sorted(p.name for p in args.data.glob("patient*"))
    wall = {"ED": {}, "ES": {}}
    texture, end, right, order, shuffled = {}, {}, {}, {}, {}
    rng = np.random.default_rng(0)
    for case, image_path, gt in held_out_volumes(args.data, subjects):
        image = nib.load(str(image_path))
        spacing = np.array(image.header.get_zooms()[:3], float)
        values = _measures(gt, spacing)
        wall[case[-2:]][case] = values["lv_wall_mm"]
        data = np.asarray(image.dataobj, float)
        texture[case] = image_texture(data, gt, 2, located=np.arange(data.shape[2]))
        end[case] = values["apical_end"]
        right[case] = rv_right(gt, image.affine)
        order[case] = slice_order(data, gt, 2)
        for i in range(SHUFFLES):
            perm = rng.permutation(data.shape[2])
            shuffled[f"{case} #{i}"] = slice_order(data[..., perm], gt[..., perm], 2)
    for phase, values in wall.items():
        _summary(f"lv_wall_mm, manual labels, {phase}", values)
    _summary("image_texture, every slice, images", texture)
    _summary("apical_end, manual labels ending before their scan", end)
    _summary("rv_right, manual labels", right)
    _summary("slice_order, images", order)
    _summary(f"slice_order, images shuffled ({SHUFFLES} random orders each)", shuffled)
    _shares("slice_order", order, shuffled)
    predicted, predicted_order = {}, {}
    for folder in args.predictions:
        for path in sorted(folder.glob("*/labels.nii.gz")):
            img = nib.load(str(path))
            labels = np.asarray(img.dataobj)
            if labels.any() and (labels == LV_POOL).any() and (labels == LV_MYO).any():
                spacing = np.array(img.header.get_zooms()[:3], float)
                case = path.parent.name
                predicted[case] = _measures(labels, spacing)["apical_end"]
                image = args.data / case.split("_")[0] / f"{case}.nii.gz"
                predicted_order[case] = slice_order(np.asarray(nib.load(str(image)).dataobj,
                                                               float), labels, 2)
    if args.predictions:
        _summary("apical_end, predictions ending before their scan", predicted)
        _summary("slice_order, images, the predictions' heart box", predicted_order)


if __name__ == "__main__":
    main()
