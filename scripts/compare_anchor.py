"""Fused propagation with the initialisation-network anchor read on every stack slice, only on
the slices a propagation step passes on (bvmesh.propagate.ANCHOR_FRONTS_ONLY), or on the
acquired slices and interpolated between them (bvmesh.propagate.ANCHOR_ACQUIRED, the default).

    python scripts/compare_anchor.py ACDC/training --weights runs/fold0/model.pt -o anchor.jsonl
    python scripts/compare_anchor.py --table anchor.jsonl
    python scripts/compare_anchor.py --meshes ACDC/training/patient00{1,2,3}/patient00?_frame01.nii.gz

Every held-out volume of the cross-validation model (its record's subjects, ED and ES) is
segmented with the first two; Dice per structure against the manual labels on their own
slices, and the network stage's seconds. One torch thread (the numbers of a busy 2-core
machine). (The acquired-slice anchor's Dice: `bvmesh evaluate` runs, docs/results.md.)
``--meshes``: the given images with the bundled model (or ``--weights``), meshed as
`bvmesh segment` meshes them (outputs.mesh_of) with each of the three anchors: seconds,
faces and how the remeshing went.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from heldout import STRUCTURES, dice, held_out_volumes

#: The anchors compared: name -> (ANCHOR_FRONTS_ONLY, ANCHOR_ACQUIRED).
ANCHORS = {"every slice": (False, False), "fronts only": (True, False), "acquired": (False, True)}


def _use(anchor: str) -> None:
    from bvmesh import propagate

    propagate.ANCHOR_FRONTS_ONLY, propagate.ANCHOR_ACQUIRED = ANCHORS[anchor]


def run(args) -> None:
    import torch

    from bvmesh.pipeline import load_weights, segment

    torch.set_num_threads(1)
    model, _ = load_weights(args.weights, "cpu")
    with args.output.open("a") as out:
        for case, image, gt in held_out_volumes(args.data, model.record["held_out_subjects"]):
            row = {"case": case}
            for fronts in (False, True):
                _use("fronts only" if fronts else "every slice")
                r = segment(image, model=model)
                row["fronts" if fronts else "all"] = {"dice": dice(r.labels, gt),
                                                      "network_s": r.report["timings_s"]["network"]}
            out.write(json.dumps(row) + "\n")
            out.flush()


def meshes(paths: list[str], weights: str | None) -> None:
    import time

    from bvmesh.outputs import mesh_of
    from bvmesh.pipeline import load_weights, segment

    model, _ = load_weights(weights, "cpu")
    print("| image | anchor | mesh seconds | faces | remeshing |\n|---|---|---|---|---|")
    for path in paths:
        for anchor in ANCHORS:
            _use(anchor)
            result = segment(path, model=model)
            t0 = time.perf_counter()
            surf, _ = mesh_of(result)
            note = next((n for n in surf.notes if "remesh" in n), "")
            print(f"| {Path(path).name} | {anchor} | {time.perf_counter() - t0:.1f} | "
                  f"{len(surf.faces)} | {note} |")


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(f"{len(rows)} held-out volumes\n")
    print("| structure | mean Dice, every slice | mean Dice, fronts only | change | median change "
          "| largest change (case) |\n|---|---|---|---|---|---|")
    for _, name in STRUCTURES:
        a = np.array([r["all"]["dice"][name] for r in rows])
        f = np.array([r["fronts"]["dice"][name] for r in rows])
        worst = int(np.argmax(np.abs(f - a)))
        print(f"| {name} | {a.mean():.4f} | {f.mean():.4f} | {f.mean() - a.mean():+.4f} | "
              f"{np.median(f - a):+.4f} | {f[worst] - a[worst]:+.3f} ({rows[worst]['case']}: "
              f"{a[worst]:.3f} -> {f[worst]:.3f}) |")
    net = [np.median([r[k]["network_s"] for r in rows]) for k in ("all", "fronts")]
    print(f"\nnetwork stage, median: {net[0]:.2f} s every slice, {net[1]:.2f} s fronts only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("--weights")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--table", type=Path)
    parser.add_argument("--meshes", nargs="+")
    args = parser.parse_args()
    if args.meshes:
        meshes(args.meshes, args.weights)
    elif args.table:
        table(args.table)
    else:
        run(args)


if __name__ == "__main__":
    main()
