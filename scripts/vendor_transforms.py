"""Held-out ACDC under transforms that mimic other scanners: does a model hold its accuracy?

    python scripts/vendor_transforms.py ACDC/training --weights runs/fold0/model.pt -o a.jsonl
    python scripts/vendor_transforms.py --table a.jsonl [b.jsonl ...]

ACDC is all Siemens. Each held-out volume of a cross-validation model (its record's
subjects, ED and ES) is segmented as it is and under each transform of :data:`TRANSFORMS`,
applied to the image on its own grid (the labels stay as they are):

- ``gamma 1.4 + bias``: a smooth multiplicative bias field (+-30 % across the field of
  view) and a gamma of 1.4 (a linear contrast change alone would be undone by bvmesh's
  intensity normalisation);
- ``coarse 2 mm + noise``: in-plane resolution reduced to 2.2 mm (area-averaged, then
  linearly back to the grid) and Rician noise at 4 % of the 99th percentile;
- ``int16 window``: the 99.5th percentile and above saturated at 60 % of it and the whole
  image stored as integers 0..4095 (a narrow export window).

Dice per structure on the manual labels' slices; the table gives the median per transform.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from heldout import STRUCTURES, dice, held_out_volumes
from scipy import ndimage

TRANSFORMS = ("as is", "gamma 1.4 + bias", "coarse 2 mm + noise", "int16 window")


def transform(name: str, data: np.ndarray, spacing: np.ndarray, rng) -> np.ndarray:
    x = data.astype(np.float32)
    hi = float(np.percentile(x, 99))
    if name == "gamma 1.4 + bias":
        i, j = np.meshgrid(np.linspace(-1, 1, x.shape[0]), np.linspace(-1, 1, x.shape[1]),
                           indexing="ij")
        field = 1 + 0.3 * np.sin(1.3 * i + 0.7) * np.cos(0.9 * j - 0.4)
        x = x * field[..., None]
        x = hi * (np.clip(x, 0, None) / hi) ** 1.4
    elif name == "coarse 2 mm + noise":
        factor = [max(1.0, 2.2 / s) if k != np.argmax(spacing) else 1.0
                  for k, s in enumerate(spacing)]
        small = ndimage.zoom(ndimage.uniform_filter(x, size=[int(round(f)) for f in factor]),
                             [1 / f for f in factor], order=1)
        x = ndimage.zoom(small, np.array(x.shape) / np.array(small.shape), order=1)
        sigma = 0.04 * hi
        x = np.sqrt((x + rng.normal(0, sigma, x.shape)) ** 2 + rng.normal(0, sigma, x.shape) ** 2)
    elif name == "int16 window":
        top = 0.6 * float(np.percentile(x, 99.5))
        x = np.round(np.clip(x, 0, top) / top * 4095)
    return x.astype(np.float32)


def run(args) -> None:
    from bvmesh import io
    from bvmesh.errors import BvmeshError
    from bvmesh.pipeline import load_weights, segment

    model, _ = load_weights(args.weights, "cpu")
    rng = np.random.default_rng(0)
    with args.output.open("a") as out:
        for case, image, gt in held_out_volumes(args.data, model.record["held_out_subjects"]):
            volume = io.load(image)
            row = {"case": case, "weights": str(args.weights)}
            for name in TRANSFORMS:
                v = dataclasses.replace(volume, data=transform(name, volume.data, volume.spacing, rng))
                try:
                    row[name] = dice(segment(v, model=model).labels, gt)
                except BvmeshError:  # no heart found: a failure, Dice 0
                    row[name] = {n: 0.0 for _, n in STRUCTURES}
            out.write(json.dumps(row) + "\n")
            out.flush()


def table(paths: list[Path]) -> None:
    """Medians per transform, over the volumes every file holds (runs may be cut short)."""
    runs = {p: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in paths}
    common = set.intersection(*({r["case"] for r in rows} for rows in runs.values()))
    print("| weights | structure | " + " | ".join(TRANSFORMS) + " |")
    print("|---|---|" + "---|" * len(TRANSFORMS))
    for path, rows in runs.items():
        rows = [r for r in rows if r["case"] in common]
        for _, name in STRUCTURES:
            cells = [f"{np.median([r[t][name] for r in rows]):.3f}" for t in TRANSFORMS]
            print(f"| {path.stem} ({len(rows)} volumes) | {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("--weights")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--table", type=Path, nargs="+")
    args = parser.parse_args()
    if args.table:
        table(args.table)
    else:
        run(args)


if __name__ == "__main__":
    main()
