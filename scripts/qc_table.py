"""Does quality control flag the wrong answers? Held-out ACDC volumes, as they are and broken.

    python scripts/qc_table.py ACDC/training --weights runs/fold0/model.pt -o qc.jsonl
    python scripts/qc_table.py --table qc.jsonl
    python scripts/qc_table.py --cases results/fold*/cases.csv   # cross-validation, verdicts as run

Each held-out volume of a cross-validation model (its record's subjects) is segmented as it
is and in broken variants a user could hand bvmesh by mistake: the wrong slice axis, an ROI
far from the heart, its slices shuffled, its label map given as the image, one slice
replaced by noise, an in-plane axis flipped in the data but not in the header. Every run
records the QC verdict (report.json's ``qc``) and the LV-myocardium Dice against the
manual labels (on their own slices; a run that fails outright counts as Dice 0). The table:
of the runs with Dice < 0.6, how many QC flagged (warn or fail); of the runs with Dice
>= 0.6, how many it flagged anyway (false alarms). Each run records its checks' values,
and the table judges them by bvmesh.checks' ranges as they are when it is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

VARIANTS = ("as is", "wrong slice axis", "ROI off the heart", "slices shuffled",
            "label map as image", "a slice of noise", "flipped in-plane axis")


def variant(name: str, volume, gt_labels: np.ndarray, rng):
    """(volume, segment() keyword arguments) of a broken variant."""
    import dataclasses

    data, kw = volume.data.copy(), {}
    axis = int(np.argmax(volume.spacing))
    if name == "wrong slice axis":
        kw["slice_axis"] = (axis + 1) % 3
    elif name == "ROI off the heart":
        kw["roi"] = (5.0, 5.0)
    elif name == "slices shuffled":
        order = rng.permutation(data.shape[axis])
        data = np.take(data, order, axis=axis)
    elif name == "label map as image":
        data = gt_labels.astype(np.float32)
    elif name == "a slice of noise":
        k = data.shape[axis] // 2
        index = [slice(None)] * 3
        index[axis] = k
        data[tuple(index)] = rng.uniform(0, np.percentile(data, 99), data[tuple(index)].shape)
    elif name == "flipped in-plane axis":
        data = np.flip(data, axis=(axis + 1) % 3).copy()
    return dataclasses.replace(volume, data=data), kw


def lv_myo_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    from bvmesh.labels import LV_MYO

    axis = int(np.argmin(gt.shape))
    keep = np.moveaxis(gt > 0, axis, 0).any(axis=(1, 2))
    p = np.moveaxis(pred == LV_MYO, axis, 0)[keep]
    g = np.moveaxis(gt == LV_MYO, axis, 0)[keep]
    return float(2 * (p & g).sum() / max(p.sum() + g.sum(), 1))


def run(data_dir: Path, weights: str, output: Path, n_subjects: int | None = None) -> None:
    from bvmesh import io, segment
    from bvmesh.errors import BvmeshError
    from bvmesh.labels import parse_label_map, to_bvmesh
    from bvmesh.pipeline import load_weights

    model, _ = load_weights(weights)
    subjects = model.record.get("held_out_subjects") or sys.exit(f"{weights}: no held-out subjects")
    subjects = subjects[:n_subjects]
    rng = np.random.default_rng(0)
    done = set()
    if output.exists():
        done = {(r["case"], r["variant"]) for r in map(json.loads, output.read_text().splitlines())}
    with output.open("a", encoding="utf-8") as fh:
        for subject in subjects:
            for gt_path in sorted((data_dir / subject).glob(f"{subject}_frame??_gt.nii.gz")):
                case = gt_path.name.removesuffix("_gt.nii.gz")
                gt = to_bvmesh(np.rint(io.load(gt_path).data).astype(int), parse_label_map("acdc"))
                volume = io.load(gt_path.with_name(f"{case}.nii.gz"))
                for name in VARIANTS:
                    if (case, name) in done:
                        continue
                    vol, kw = variant(name, volume, gt, rng)
                    try:
                        result = segment(vol, model=model, **kw)
                        qc = result.report["qc"]
                        row = {"verdict": qc["verdict"], "checks": qc["failed"] + qc["warned"],
                               "dice": round(lv_myo_dice(result.labels, gt), 3),
                               "values": {k: c.get("value") for k, c in qc["checks"].items()}}
                    except BvmeshError as exc:  # refused with a message: flagged, Dice 0
                        row = {"verdict": "refused", "checks": [str(exc)[:120]], "dice": 0.0}
                    fh.write(json.dumps({"case": case, "variant": name, **row}) + "\n")
                    fh.flush()
                    print(case, name, row["verdict"], row["dice"], flush=True)


def verdict(row: dict) -> str:
    """The row's QC verdict under the ranges of bvmesh.checks as they are now, from the
    check values the run recorded (rows without values keep the verdict they had)."""
    from bvmesh.checks import RANGES, assess

    if "values" not in row:
        return row["verdict"]
    return assess({k: v for k, v in row["values"].items() if k in RANGES})["verdict"]


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    flagged = [verdict(r) != "pass" for r in rows]
    bad = [r["dice"] < 0.6 for r in rows]
    print("| variant | runs | Dice < 0.6 | flagged of those | Dice >= 0.6 | "
          "flagged of those (false alarms) |")
    print("|---|---|---|---|---|---|")
    for name in [*VARIANTS, "all"]:
        sel = [i for i, r in enumerate(rows) if name in ("all", r["variant"])]
        nb = [i for i in sel if bad[i]]
        ng = [i for i in sel if not bad[i]]
        print(f"| {name} | {len(sel)} | {len(nb)} | {sum(flagged[i] for i in nb)} | {len(ng)} | "
              f"{sum(flagged[i] for i in ng)} |")


def cross_validation(paths: list[Path]) -> None:
    """Flagged and missed over the cases.csv of `bvmesh evaluate --cases ... --held-out`
    (each case's verdict as the run judged it): the wrong answers (LV-myocardium Dice under
    0.6), and the others split by whether the base slice bvmesh used is the labels' own
    (a warning on a wrong base is a wrong answer found, not a false alarm)."""
    import collections
    import csv

    rows = [r for p in paths for r in csv.DictReader(p.open(encoding="utf-8"))]
    flagged = {r["case"]: r["qc"] != "pass" for r in rows}
    bad = [r for r in rows if float(r["lv_myo_dice"]) < 0.6]
    good = [r for r in rows if float(r["lv_myo_dice"]) >= 0.6]
    right = [r for r in good if r["base_slice_pred"] == r["base_slice"]]
    wrong = [r for r in good if r["base_slice_pred"] != r["base_slice"]]
    print("| held-out volumes | runs | flagged |")
    print("|---|---|---|")
    for name, sel in (("LV-myocardium Dice < 0.6", bad), ("Dice >= 0.6, base wrong", wrong),
                      ("Dice >= 0.6, base right (false alarms)", right), ("Dice >= 0.6, all", good)):
        print(f"| {name} | {len(sel)} | {sum(flagged[r['case']] for r in sel)} |")
    checks = collections.Counter(c for r in good if flagged[r["case"]] for c in r["qc_checks"].split(";"))
    print("checks raised on Dice >= 0.6:", ", ".join(f"{k} {n}" for k, n in checks.most_common()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, nargs="?")
    ap.add_argument("--weights")
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--table", type=Path)
    ap.add_argument("--cases", type=Path, nargs="+", help="cases.csv files of held-out evaluations")
    ap.add_argument("--subjects", type=int, default=None, help="only the first N held-out subjects")
    args = ap.parse_args()
    if args.table:
        return table(args.table)
    if args.cases:
        return cross_validation(args.cases)
    if not (args.data and args.weights and args.output):
        sys.exit("give DATA, --weights and -o (or --table FILE)")
    run(args.data, args.weights, args.output, args.subjects)


if __name__ == "__main__":
    main()
