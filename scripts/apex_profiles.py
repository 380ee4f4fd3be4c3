"""How ACDC's manual label maps end at the apex: the figures bvmesh.plausibility's apical
rules are set against.

    python scripts/apex_profiles.py ACDC/training

Per volume (ED and ES of every subject), from the base (heldout.manual_base) toward the
apex, on the labelled slices:

- the LV cavity's largest re-widening from the middle slice on: a section over the
  smallest one before it (how far the ``apical_waist`` rule must stay from real cavities);
- whether :func:`bvmesh.plausibility.cavity_waist`, read from the base, finds a waist
  (it must not, on real labels);
- how many slices hold LV myocardium past the cavity's last slice (the apical cap,
  ``CAP_MM``);
- how many slices the RV pool runs on past the LV's (pool or myocardium) last slice (a rule
  that the RV ends with the LV would remove real anatomy where it does).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from heldout import held_out_volumes, manual_base

from bvmesh.labels import LV_MYO, LV_POOL, RV_POOL
from bvmesh.plausibility import cavity_waist


def rewidening(cavity: np.ndarray) -> tuple[float, float]:
    """Largest ratio of a section to the smallest section before it, from the middle on,
    and that section (pixels)."""
    worst, section, smallest = 0.0, 0.0, np.inf
    for area in cavity[len(cavity) // 2:]:
        if 0 < smallest < np.inf and area / smallest > worst:
            worst, section = area / smallest, area
        if area > 0:
            smallest = min(smallest, area)
    return worst, section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    args = ap.parse_args()
    import nibabel as nib

    subjects = sorted(p.name for p in args.data.glob("patient*"))
    rows = []
    for name, path, gt in held_out_volumes(args.data, subjects):
        base, sign = manual_base(gt)
        zooms = nib.load(str(path)).header.get_zooms()
        labelled = np.flatnonzero(gt.any(axis=(0, 1)))
        order = labelled if sign > 0 else labelled[::-1]
        cavity = np.array([(gt[..., k] == LV_POOL).sum() for k in order], float)
        muscle = np.array([(gt[..., k] == LV_MYO).any() for k in order])
        last_cavity = int(np.flatnonzero(cavity > 0)[-1])
        lv = [np.isin(gt[..., k], (LV_POOL, LV_MYO)).any() for k in order]
        rv = np.flatnonzero([(gt[..., k] == RV_POOL).any() for k in order])
        ratio, section = rewidening(cavity)
        rows.append({"case": name, "rewiden": ratio, "cm2": section * zooms[0] * zooms[1] / 100,
                     "waist": cavity_waist(cavity, 0, float(zooms[0] * zooms[1])),
                     "cap_slices": int(muscle[last_cavity + 1:].sum()),
                     "rv_past_lv": int(rv[-1] - np.flatnonzero(lv)[-1]) if len(rv) else None})
    worst = sorted(rows, key=lambda r: -r["rewiden"])
    print(f"volumes: {len(rows)}")
    print("largest cavity re-widening from the middle slice on: "
          + ", ".join(f"{r['case']} {r['rewiden']:.2f} x (to {r['cm2']:.2f} cm2)" for r in worst[:3]))
    print(f"cavity_waist read from the base finds a waist in {sum(r['waist'] is not None for r in rows)}")
    caps = Counter(r["cap_slices"] for r in rows)
    print("slices of myocardium past the cavity's last slice: "
          + ", ".join(f"{k}: {caps[k]}" for k in sorted(caps)))
    past = [r for r in rows if (r["rv_past_lv"] or 0) > 0]
    print(f"the RV pool runs on past the LV's last slice in {len(past)}: "
          + ", ".join(f"{r['case']} ({r['rv_past_lv']})" for r in past))


if __name__ == "__main__":
    main()
